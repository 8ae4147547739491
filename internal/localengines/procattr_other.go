//go:build unix && !linux

package localengines

import "syscall"

// procAttr puts the engine in its own process group, so Close can kill it with any children.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
