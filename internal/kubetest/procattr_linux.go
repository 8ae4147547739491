package kubetest

import "syscall"

// procAttr puts a server in its own process group, so Close can kill it with any
// children, and has the kernel kill it if the test binary dies without calling Close (a
// test timeout, say). Pdeathsig follows the OS thread that forked; Go retires a thread
// only when a goroutine exits while locked to it.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
