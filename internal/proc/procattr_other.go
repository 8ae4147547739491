//go:build unix && !linux

package proc

import "syscall"

// SysProcAttr puts a child in its own process group, so that it can be signalled with
// its children. Only Linux can tie a child's life to its parent's; stop children
// explicitly.
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
