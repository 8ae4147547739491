package localengines

import "syscall"

// procAttr puts the engine in its own process group, so Close can kill it with any
// children, and has the kernel kill it if the parent dies without calling Close (a test
// binary killed by its timeout, say). Pdeathsig follows the OS thread that forked; Go
// retires a thread only when a goroutine exits while locked to it.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
