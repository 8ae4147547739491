// Package proc runs the child processes of tests and test rigs (engines, servers,
// workers): each in its own process group that the kernel kills with the parent (on
// Linux), its output in a log file and a ring buffer for error messages, stopped with
// SIGTERM and then SIGKILL after a grace, and signalled as a group for chaos (kill -9,
// SIGSTOP, SIGCONT). Every wait takes a context and is bounded.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// defaultTailSize is how much of the latest output a Process keeps by default.
	defaultTailSize = 16 << 10
	// tailShown is how much of that output an error message shows.
	tailShown = 4 << 10
	// killWait bounds the wait for a process to be gone after SIGKILL.
	killWait = 10 * time.Second
	// waitDelay bounds how long output pipes may stay open after the process exited (a
	// grandchild that holds them, say).
	waitDelay = 5 * time.Second
)

// ErrKilled is wrapped by Stop's error when the process had to be killed because it did
// not exit within the grace period after SIGTERM.
var ErrKilled = errors.New("killed after the grace period")

// Spec says what to run and where its output goes.
type Spec struct {
	// Name names the process in errors; the base name of Path if empty.
	Name string
	Path string
	Args []string
	// Env is the environment; nil means the parent's.
	Env []string
	Dir string
	// LogPath, if set, receives the output (appended to what is there).
	LogPath string
	// LogCommand writes "+ path args" to the log before the output.
	LogCommand bool
	// Output, if set, receives the output too.
	Output io.Writer
	// StderrOnly drops standard output: only standard error is logged and kept.
	StderrOnly bool
	// TailSize is how many bytes of the latest output Output and Tail keep; 16 KiB if 0.
	TailSize int
	// OnExit, if set, runs once the process has exited (Done is closed by then).
	OnExit func(*Process)
}

// Process is a started child process.
type Process struct {
	name     string
	logPath  string
	cmd      *exec.Cmd
	out      *ring
	done     chan struct{} // closed once the process has exited and been reaped
	waitErr  error         // set before done is closed
	stopping atomic.Bool
}

// Start starts the process in its own process group. The process runs until it exits,
// is stopped or killed, or the parent dies; Start itself does not wait.
func Start(spec Spec) (*Process, error) {
	name := spec.Name
	if name == "" {
		name = filepath.Base(spec.Path)
	}
	size := spec.TailSize
	if size <= 0 {
		size = defaultTailSize
	}
	p := &Process{name: name, logPath: spec.LogPath, out: &ring{max: size}, done: make(chan struct{})}
	sinks := []io.Writer{p.out}
	var logFile *os.File
	if spec.LogPath != "" {
		f, err := os.OpenFile(spec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("%s log: %w", name, err)
		}
		if spec.LogCommand {
			fmt.Fprintf(f, "+ %s %s\n", spec.Path, strings.Join(spec.Args, " "))
		}
		logFile = f
		sinks = append(sinks, f)
	}
	if spec.Output != nil {
		sinks = append(sinks, spec.Output)
	}
	// Not CommandContext: the process must outlive the caller's context; Stop ends it.
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Env = spec.Env
	cmd.Dir = spec.Dir
	out := io.MultiWriter(sinks...)
	cmd.Stderr = out
	if !spec.StderrOnly {
		cmd.Stdout = out
	}
	cmd.SysProcAttr = SysProcAttr()
	cmd.WaitDelay = waitDelay
	if err := cmd.Start(); err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.cmd = cmd
	go func() {
		p.waitErr = cmd.Wait()
		if logFile != nil {
			logFile.Close()
		}
		close(p.done)
		if spec.OnExit != nil {
			spec.OnExit(p)
		}
	}()
	return p, nil
}

// Name is the process's name in errors.
func (p *Process) Name() string { return p.name }

// Pid is the process id, which is also its process group id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// LogPath is the log file ("" if none).
func (p *Process) LogPath() string { return p.logPath }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is how the process ended (nil for exit status 0); nil while it runs.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.waitErr
}

// ExitCode is the exit status once the process has exited; -1 while it runs or when a
// signal ended it.
func (p *Process) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// State describes how the process ended ("exit status 2", "signal: killed"), or
// "running".
func (p *Process) State() string {
	if !p.Exited() {
		return "running"
	}
	return p.cmd.ProcessState.String()
}

// Stopping reports whether Stop or Kill was called, so that an exit is not a crash.
func (p *Process) Stopping() bool { return p.stopping.Load() }

// Wait waits until the process has exited or ctx ends.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s (pid %d) still running: %w", p.name, p.Pid(), ctx.Err())
	}
}

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("signal %v to %s: %w", sig, p.name, os.ErrProcessDone)
	}
	if err := syscall.Kill(-p.Pid(), sig); err != nil {
		return fmt.Errorf("signal %v to %s (pgid %d): %w", sig, p.name, p.Pid(), err)
	}
	return nil
}

// Pause stops the process group with SIGSTOP.
func (p *Process) Pause() error { return p.Signal(syscall.SIGSTOP) }

// Resume continues the process group with SIGCONT.
func (p *Process) Resume() error { return p.Signal(syscall.SIGCONT) }

// Kill kills the process group with SIGKILL (resuming it first: a stopped process dies
// only once continued) and waits until the process is gone, at most until ctx ends or
// 10s.
func (p *Process) Kill(ctx context.Context) error {
	p.stopping.Store(true)
	if p.Exited() {
		return nil
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGCONT)
	if err := syscall.Kill(-p.Pid(), syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s (pgid %d): %w", p.name, p.Pid(), err)
	}
	ctx, cancel := context.WithTimeout(ctx, killWait)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		return fmt.Errorf("after SIGKILL: %w", err)
	}
	return nil
}

// Stop sends SIGTERM (and SIGCONT, in case it is paused) to the process group and waits
// grace (or until ctx ends) for the exit; then it kills the group, waits at most 10s for
// it to be gone, and returns an error wrapping ErrKilled. Stopping a process that has
// exited does nothing.
func (p *Process) Stop(ctx context.Context, grace time.Duration) error {
	p.stopping.Store(true)
	if p.Exited() {
		return nil
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGTERM)
	_ = syscall.Kill(-p.Pid(), syscall.SIGCONT)
	gctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	werr := p.Wait(gctx)
	if werr == nil {
		return nil
	}
	if err := p.Kill(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	return fmt.Errorf("%s did not exit within %s of SIGTERM (%w): %w", p.name, grace, werr, ErrKilled)
}

// Output is the latest output kept (at most Spec.TailSize bytes).
func (p *Process) Output() string { return string(p.out.Bytes()) }

// Tail is the end of the output for error messages: its last 4 KiB from a line start,
// "(no output)" if there is none, and where the full log is.
func (p *Process) Tail() string {
	b := p.out.Bytes()
	if len(b) > tailShown {
		b = b[len(b)-tailShown:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)-1 {
			b = b[i+1:]
		}
	}
	t := strings.TrimRight(string(b), "\n")
	if t == "" {
		t = "(no output)"
	}
	if p.logPath != "" {
		t += "\n(full log: " + p.logPath + ")"
	}
	return t
}

// ExitError says how the process ended, with the tail of its output.
func (p *Process) ExitError() error {
	return fmt.Errorf("%s exited (%v); last output:\n%s", p.name, p.Err(), p.Tail())
}

// RSS is the process's resident memory in bytes (0 if unknown or exited; Linux only).
func (p *Process) RSS() int64 {
	if p.Exited() {
		return 0
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid()) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			if f := strings.Fields(rest); len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}
