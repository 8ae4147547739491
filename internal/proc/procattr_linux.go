package proc

import "syscall"

// SysProcAttr puts a child in its own process group, so that it can be signalled with
// its children, and has the kernel kill it if the parent dies without stopping it (a
// test binary killed by its timeout, say). Pdeathsig follows the OS thread that forked;
// Go retires a thread only when a goroutine exits while locked to it.
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
