package proc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func start(t *testing.T, spec Spec) *Process {
	t.Helper()
	p, err := Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill(context.Background()) })
	return p
}

func sh(script string) Spec { return Spec{Path: "/bin/sh", Args: []string{"-c", script}} }

// waitOutput waits until the process's output contains s.
func waitOutput(t *testing.T, p *Process, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Output(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the output after 10s: %q", s, p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStopEndsProcessWithSIGTERM(t *testing.T) {
	p := start(t, Spec{Path: "sleep", Args: []string{"60"}})
	if p.Name() != "sleep" || p.Exited() || p.State() != "running" || p.ExitCode() != -1 {
		t.Fatalf("fresh process: name %q exited %v state %q code %d", p.Name(), p.Exited(), p.State(), p.ExitCode())
	}
	if err := p.Stop(t.Context(), 5*time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if !p.Exited() || !p.Stopping() || p.State() != "signal: terminated" {
		t.Fatalf("after stop: exited %v stopping %v state %q", p.Exited(), p.Stopping(), p.State())
	}
	if err := p.Stop(t.Context(), time.Second); err != nil {
		t.Fatalf("second stop: %v", err)
	}
}

func TestStopKillsAfterGrace(t *testing.T) {
	p := start(t, sh(`trap "" TERM; echo ready; while :; do sleep 1; done`))
	waitOutput(t, p, "ready")
	begin := time.Now()
	err := p.Stop(t.Context(), 300*time.Millisecond)
	if !errors.Is(err, ErrKilled) {
		t.Fatalf("stop of a process ignoring SIGTERM: %v, want ErrKilled", err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("stop took %s", took)
	}
	if p.State() != "signal: killed" {
		t.Errorf("state %q, want killed", p.State())
	}
}

func TestKillReachesGrandchildren(t *testing.T) {
	p := start(t, sh(`sleep 60 & echo "child $!"; wait`))
	waitOutput(t, p, "child ")
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(p.Output(), "child ")))
	if err != nil {
		t.Fatalf("grandchild pid from %q: %v", p.Output(), err)
	}
	if err := p.Kill(t.Context()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		// A killed grandchild may linger as a zombie until init reaps it.
		if data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && strings.Contains(string(data), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d still alive after the group was killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestExitStatusAndLogTail(t *testing.T) {
	log := filepath.Join(t.TempDir(), "x.log")
	exited := make(chan *Process, 1)
	spec := sh(`i=0; while [ $i -lt 3000 ]; do echo "line $i"; i=$((i+1)); done; echo oops >&2; exit 3`)
	spec.Name, spec.LogPath, spec.LogCommand = "lines", log, true
	spec.OnExit = func(p *Process) { exited <- p }
	p := start(t, spec)
	select {
	case got := <-exited:
		if got != p {
			t.Fatal("OnExit got another process")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit within 10s")
	}
	if p.ExitCode() != 3 || p.Stopping() {
		t.Errorf("exit code %d stopping %v, want 3 and false", p.ExitCode(), p.Stopping())
	}
	msg := p.ExitError().Error()
	for _, want := range []string{"lines exited (exit status 3)", "line 2999\noops", "(full log: " + log + ")"} {
		if !strings.Contains(msg, want) {
			t.Errorf("exit error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "line 1\n") || len(msg) > 5000 {
		t.Errorf("exit error is not a tail (%d bytes)", len(msg))
	}
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "+ /bin/sh -c") || !strings.Contains(string(data), "\nline 0\n") {
		t.Errorf("log file lacks the command or the first line:\n%.200s", data)
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("signal after exit: %v, want os.ErrProcessDone", err)
	}
}

func TestStderrOnlyAndNoOutput(t *testing.T) {
	spec := sh(`echo out; echo err >&2`)
	spec.StderrOnly = true
	p := start(t, spec)
	if err := p.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := p.Output(); got != "err\n" {
		t.Errorf("output %q, want only stderr", got)
	}
	q := start(t, sh(`exit 0`))
	if err := q.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if q.Tail() != "(no output)" || q.Err() != nil || q.ExitCode() != 0 {
		t.Errorf("tail %q err %v code %d", q.Tail(), q.Err(), q.ExitCode())
	}
}

func TestPauseResumeAndWaitDeadline(t *testing.T) {
	p := start(t, Spec{Path: "sleep", Args: []string{"60"}})
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	stat := func() string {
		data, _ := os.ReadFile("/proc/" + strconv.Itoa(p.Pid()) + "/stat")
		return string(data)
	}
	if _, err := os.Stat("/proc/self/stat"); err == nil {
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(stat(), ") T ") && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if !strings.Contains(stat(), ") T ") {
			t.Errorf("paused process not stopped: %s", stat())
		}
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := p.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wait on a running process: %v, want deadline exceeded", err)
	}
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(t.Context()); err != nil { // a paused process dies too
		t.Fatal(err)
	}
	if p.State() != "signal: killed" {
		t.Errorf("state %q", p.State())
	}
}

func TestStartFailure(t *testing.T) {
	if _, err := Start(Spec{Name: "nope", Path: "/nonexistent/binary"}); err == nil || !strings.Contains(err.Error(), "start nope") {
		t.Errorf("start of a missing binary: %v", err)
	}
	if _, err := Start(Spec{Path: "sleep", LogPath: "/nonexistent/dir/x.log"}); err == nil {
		t.Error("start with an unwritable log succeeded")
	}
}
