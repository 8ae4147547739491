//go:build unix && !linux

package kubetest

import "syscall"

// procAttr puts a server in its own process group, so Close can kill it with any children.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
