package multilang

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/proc"
)

// maxLine bounds a line from the child: its messages are short.
const maxLine = 1 << 20

// killWait bounds the wait for a killed child to be reaped.
const killWait = 5 * time.Second

// errExited is returned by next once the child exited and everything it wrote was read.
var errExited = errors.New("the child exited")

// lineOrErr is what the reader of the child's standard output hands over.
type lineOrErr struct {
	msg childMsg
	err error
}

// child is one running record processor process: its standard input takes actions, its
// standard output gives status and checkpoint messages (read by a goroutine into msgs),
// and its standard error is forwarded to the log line by line.
type child struct {
	cmd   *exec.Cmd
	pid   int
	log   *slog.Logger
	stdin *os.File // write end; writes take deadlines
	// msgs receives the messages read from standard output; closed at its end.
	msgs chan lineOrErr
	// exited is closed once the process was reaped; waitErr is set before.
	exited  chan struct{}
	waitErr error
	// stop ends the readers once the child is done with.
	stop     chan struct{}
	stopOnce sync.Once
	readers  sync.WaitGroup
	stdout   *os.File
}

// startChild starts command with env added to the worker's environment, in its own
// process group (killed with the worker on Linux).
func startChild(command []string, dir string, env []string, log *slog.Logger) (*child, error) {
	if len(command) == 0 {
		return nil, errors.New("multilang: no command")
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("multilang: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW)
		return nil, fmt.Errorf("multilang: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW, outR, outW)
		return nil, fmt.Errorf("multilang: %w", err)
	}
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd.SysProcAttr = proc.SysProcAttr()
	err = cmd.Start()
	closeAll(inR, outW, errW) // the child's ends
	if err != nil {
		closeAll(inW, outR, errR)
		return nil, fmt.Errorf("multilang: start %q: %w", command, err)
	}
	c := &child{cmd: cmd, pid: cmd.Process.Pid, stdin: inW, stdout: outR,
		msgs: make(chan lineOrErr, 4), exited: make(chan struct{}), stop: make(chan struct{})}
	c.log = log.With("pid", c.pid)
	c.readers.Add(2)
	go c.readStdout(outR)
	go c.forwardStderr(errR)
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		_ = f.Close()
	}
}

// readStdout parses the child's standard output into msgs until its end; empty lines
// (the KCL's clients write one before each message) are skipped.
func (c *child) readStdout(r *os.File) {
	defer c.readers.Done()
	defer close(c.msgs)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.Trim(line, " \t\r")) == 0 {
			continue
		}
		m, err := parseChildLine(line)
		select {
		case c.msgs <- lineOrErr{m, err}:
		case <-c.stop:
			return
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, os.ErrClosed) {
		select {
		case c.msgs <- lineOrErr{err: fmt.Errorf("%w: reading standard output: %w", errProtocol, err)}:
		case <-c.stop:
		}
	}
}

// forwardStderr logs every line the child writes to standard error.
func (c *child) forwardStderr(r *os.File) {
	defer c.readers.Done()
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4<<10), maxLine)
	for sc.Scan() {
		c.log.Info("record processor stderr", "line", sc.Text())
	}
}

// send writes one message line, by deadline.
func (c *child) send(line []byte, deadline time.Time) error {
	if err := c.stdin.SetWriteDeadline(deadline); err != nil {
		return fmt.Errorf("set write deadline: %w", err)
	}
	if _, err := c.stdin.Write(append(line, '\n')); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("the child did not read its standard input in time: %w", err)
		}
		return fmt.Errorf("write to the child: %w", err)
	}
	return nil
}

// exitState describes how the child ended, once it has.
func (c *child) exitState() string {
	select {
	case <-c.exited:
	default:
		return "still running"
	}
	var ee *exec.ExitError
	if errors.As(c.waitErr, &ee) {
		return ee.ProcessState.String()
	}
	if c.waitErr != nil {
		return c.waitErr.Error()
	}
	return "exit status 0"
}

// kill kills the child's process group and waits (bounded) until it is reaped and its
// readers are done.
func (c *child) kill() {
	_ = syscall.Kill(-c.pid, syscall.SIGKILL)
	c.finish(killWait)
}

// close closes the child's standard input, the KCL's signal to exit, and waits up to grace
// for it to exit before killing it.
func (c *child) close(grace time.Duration) {
	_ = c.stdin.Close()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.exited:
		c.finish(killWait)
	case <-t.C:
		c.log.Warn("record processor did not exit after its standard input was closed: killing it", "grace", grace)
		c.kill()
	}
}

// finish waits up to d for the process to be reaped, then ends the readers.
func (c *child) finish(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.exited:
	case <-t.C:
		c.log.Error("record processor not reaped after SIGKILL", "waited", d)
	}
	c.stopOnce.Do(func() { close(c.stop) })
	_ = c.stdin.Close()
	// A grandchild may hold the output pipes open: closing our end ends the reader.
	_ = c.stdout.Close()
	done := make(chan struct{})
	go func() {
		c.readers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
}

// next returns the child's next message, waiting until deadline or ctx's end. After the
// child exited it still returns what it wrote before (up to a short while), then
// errExited.
func (c *child) next(ctx context.Context, deadline time.Time) (childMsg, error) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	exited := c.exited
	for {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				return childMsg{}, errExited
			}
			return m.msg, m.err
		case <-exited:
			// Let the reader hand over what was written before the exit.
			exited = nil
			t.Reset(200 * time.Millisecond)
		case <-t.C:
			if exited == nil {
				return childMsg{}, errExited
			}
			return childMsg{}, context.DeadlineExceeded
		case <-ctx.Done():
			return childMsg{}, ctx.Err()
		}
	}
}
