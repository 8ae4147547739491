package multilang

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// The test binary is also the fake record processor: with fakeModeEnv set it speaks the
// MultiLang protocol on its standard input and output (as the KCL's clients do, an empty
// line before each message) and writes what it saw to the file in fakeLogEnv.
const (
	fakeModeEnv = "MULTILANG_FAKE_CHILD"
	fakeLogEnv  = "MULTILANG_FAKE_LOG"
	// fakeDelayEnv is how long mode "slow" takes per batch (300ms if unset).
	fakeDelayEnv = "MULTILANG_FAKE_DELAY"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeModeEnv); mode != "" {
		fakeChild(mode, os.Getenv(fakeLogEnv))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// seen is one line of the fake child's log.
type seen struct {
	Got   string `json:"got,omitempty"`
	Seq   string `json:"seq,omitempty"`
	Sub   *int64 `json:"sub,omitempty"`
	Count int    `json:"count,omitempty"`
	Data  string `json:"data,omitempty"`
	// Answer is the error of a checkpoint answer ("" for success), CheckpointAt what it
	// asked for.
	Answer       *string `json:"answer,omitempty"`
	CheckpointAt string  `json:"checkpointAt,omitempty"`
	Epoch        string  `json:"epoch,omitempty"`
}

// fakeChild misbehaves (mode) on its first processRecords only, once per log file: the
// child started after it behaves.
func fakeChild(mode, logPath string) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		panic(err)
	}
	note := func(s seen) {
		b, _ := json.Marshal(s)
		_, _ = logf.Write(append(b, '\n'))
	}
	send := func(v any) {
		b, _ := json.Marshal(v)
		fmt.Printf("\n%s\n", b)
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(nil, 1<<20)
	next := func() map[string]any {
		for in.Scan() {
			if line := strings.TrimSpace(in.Text()); line != "" {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					panic(err)
				}
				return m
			}
		}
		os.Exit(0) // standard input closed: done
		return nil
	}
	checkpoint := func(seq any, sub any) {
		m := map[string]any{"action": "checkpoint", "sequenceNumber": seq}
		if sub != nil {
			m["subSequenceNumber"] = sub
		}
		send(m)
		r := next()
		answer, _ := r["error"].(string)
		at, _ := seq.(string)
		note(seen{Got: "checkpointAnswer", Answer: &answer, CheckpointAt: at})
	}
	marker := logPath + ".misbehaved"
	first := func() bool {
		_, err := os.Stat(marker)
		if err == nil {
			return false
		}
		_ = os.WriteFile(marker, nil, 0o644)
		return true
	}
	for {
		m := next()
		action, _ := m["action"].(string)
		s := seen{Got: action}
		if seq, ok := m["sequenceNumber"].(string); ok {
			s.Seq = seq
		}
		if sub, ok := m["subSequenceNumber"].(float64); ok {
			n := int64(sub)
			s.Sub = &n
		}
		recs, _ := m["records"].([]any)
		s.Count = len(recs)
		if action == "initialize" {
			s.Epoch = os.Getenv(EnvEpoch)
		}
		for _, r := range recs {
			d, _ := r.(map[string]any)["data"].(string)
			s.Data += d + ","
		}
		note(s)
		switch action {
		case "initialize":
			fmt.Fprintf(os.Stderr, "initialized on %s\n", m["shardId"])
		case "processRecords":
			firstRec, _ := recs[0].(map[string]any)
			lastRec, _ := recs[len(recs)-1].(map[string]any)
			if mode != "happy" && mode != "slow" && first() {
				switch mode {
				case "ahead": // a checkpoint after the batch, then as usual
					checkpoint("999", nil)
				case "exitidle": // finish the batch, then exit before the next action
					checkpoint(lastRec["sequenceNumber"], lastRec["subSequenceNumber"])
					send(map[string]any{"action": "status", "responseFor": action})
					os.Exit(0)
				case "crash": // checkpoint the first record, then die mid-batch
					checkpoint(firstRec["sequenceNumber"], firstRec["subSequenceNumber"])
					os.Exit(3)
				case "hang":
					time.Sleep(time.Hour)
				case "garbage":
					fmt.Println("console.log output where a message belongs")
					time.Sleep(time.Hour)
				}
			}
			if mode == "slow" {
				d, err := time.ParseDuration(os.Getenv(fakeDelayEnv))
				if err != nil {
					d = 300 * time.Millisecond
				}
				time.Sleep(d)
			}
			checkpoint(lastRec["sequenceNumber"], lastRec["subSequenceNumber"])
		case "shutdownRequested", "shardEnded":
			checkpoint(nil, nil)
		}
		send(map[string]any{"action": "status", "responseFor": action})
	}
}

// fakeCheckpointer records checkpoints; lost refuses them as a fenced one does. The
// processor calls it from the goroutine that calls the processor.
type fakeCheckpointer struct {
	last lease.ExtendedSequenceNumber
	lost bool
	all  []lease.ExtendedSequenceNumber
}

func (f *fakeCheckpointer) Checkpoint(ctx context.Context, seq string) error {
	return f.CheckpointRecord(ctx, stream.Record{SequenceNumber: seq})
}

func (f *fakeCheckpointer) CheckpointRecord(_ context.Context, r stream.Record) error {
	if f.lost {
		return fmt.Errorf("shard x: %w", consumer.ErrLeaseLost)
	}
	v := lease.ExtendedSequenceNumber{SequenceNumber: r.SequenceNumber, SubSequenceNumber: r.SubSequenceNumber}
	if c, ok := v.Compare(f.last); ok && c <= 0 {
		if c == 0 {
			return nil // nothing new, as the worker's checkpointer
		}
		return consumer.ErrCheckpointBackwards
	}
	f.last = v
	f.all = append(f.all, v)
	return nil
}

func (f *fakeCheckpointer) LastCheckpoint() string { return f.last.SequenceNumber }

func (f *fakeCheckpointer) LastExtendedSequenceNumber() lease.ExtendedSequenceNumber { return f.last }

// syncBuffer is a log destination safe for the child's stderr forwarder.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func batch(seqs ...string) []stream.Record {
	out := make([]stream.Record, len(seqs))
	for i, s := range seqs {
		out[i] = stream.Record{SequenceNumber: s, PartitionKey: "pk", Data: []byte("d" + s), ApproximateArrivalTimestamp: time.UnixMilli(1_700_000_000_000)}
	}
	return out
}

// after mirrors the worker's retry: the records after the last checkpoint.
func after(recs []stream.Record, cp lease.ExtendedSequenceNumber) []stream.Record {
	for i, r := range recs {
		if c, ok := (lease.ExtendedSequenceNumber{SequenceNumber: r.SequenceNumber, SubSequenceNumber: r.SubSequenceNumber}).Compare(cp); !ok || c > 0 {
			return recs[i:]
		}
	}
	return nil
}

func readSeen(t *testing.T, path string) []seen {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []seen
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var s seen
		if err := json.Unmarshal([]byte(l), &s); err != nil {
			t.Fatalf("fake child log line %q: %v", l, err)
		}
		out = append(out, s)
	}
	return out
}

func TestProcessorProtocol(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		mode string
		// lose: the lease is lost before the batch (the checkpointer refuses); cancel:
		// the worker cancels the action while the child works.
		lose, cancel bool
		// wantErr is what the first ProcessRecords returns ("" for nil).
		wantErr string
		// timeout is the action deadline (10s if 0: a loaded machine starts the child slowly).
		timeout time.Duration
		// next is a batch handed over after the first one (and its retry), after a pause.
		next []string
		// wantLost: that error matches consumer.ErrLeaseLost (the worker then calls
		// LeaseLost); otherwise the worker retries and then shuts down.
		wantLost bool
		// wantCheckpoints are the checkpoints that landed, in order.
		wantCheckpoints []string
		// wantInits are the checkpoints the children were initialized at.
		wantInits []string
		// wantAnswers are the checkpoint answers the children saw, in order.
		wantAnswers []string
		wantLog     string
	}{
		{name: "happy path", mode: "happy",
			wantCheckpoints: []string{"300"}, wantInits: []string{lease.TrimHorizon},
			wantAnswers: []string{"", ""}, wantLog: "initialized on shardId-000000000007"},
		{name: "checkpoint refused after the lease was lost", mode: "happy", lose: true,
			wantErr: "lease lost", wantLost: true, wantInits: []string{lease.TrimHorizon},
			wantAnswers: []string{ErrorShutdown}, wantLog: "checkpoint refused"},
		{name: "action canceled while the child works", mode: "slow", cancel: true,
			wantErr: "lease lost", wantLost: true, wantInits: []string{lease.TrimHorizon},
			wantAnswers: []string{ErrorShutdown}},
		{name: "child crashes mid-batch", mode: "crash",
			wantErr: "the child exited", wantCheckpoints: []string{"100", "300"}, wantInits: []string{lease.TrimHorizon, "100"},
			wantAnswers: []string{"", "", ""}, wantLog: "restarted from the last checkpoint"},
		{name: "child hangs past the deadline", mode: "hang",
			timeout: 3 * time.Second, wantErr: "no answer within 3s", wantCheckpoints: []string{"300"}, wantInits: []string{lease.TrimHorizon, lease.TrimHorizon},
			wantAnswers: []string{"", ""}, wantLog: "restarted from the last checkpoint"},
		{name: "checkpoint after the batch refused", mode: "ahead",
			wantCheckpoints: []string{"300"}, wantInits: []string{lease.TrimHorizon},
			wantAnswers: []string{ErrorIllegalArgument, "", ""}, wantLog: "checkpoint after the last record delivered"},
		{name: "child exits between batches", mode: "exitidle", next: []string{"400"},
			wantCheckpoints: []string{"300", "400"}, wantInits: []string{lease.TrimHorizon, "300"},
			wantAnswers: []string{"", "", ""}, wantLog: "exited between actions"},
		{name: "malformed line from the child", mode: "garbage",
			wantErr: "not a MultiLang message", wantCheckpoints: []string{"300"}, wantInits: []string{lease.TrimHorizon, lease.TrimHorizon},
			wantAnswers: []string{"", ""}, wantLog: "console.log output"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			logPath := filepath.Join(t.TempDir(), "child.jsonl")
			var logBuf syncBuffer
			f, err := NewFactory(Config{Command: []string{exe}, WorkerID: "w1",
				Env:           []string{fakeModeEnv + "=" + tt.mode, fakeLogEnv + "=" + logPath},
				ActionTimeout: cmp.Or(tt.timeout, 10*time.Second), CancelGrace: 5 * time.Second, ExitGrace: 2 * time.Second,
				Logger: slog.New(slog.NewJSONHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			if err != nil {
				t.Fatal(err)
			}
			p := f.Processor("shardId-000000000007")
			ctx := t.Context()
			if err := p.Initialize(ctx, consumer.InitializeInput{ShardID: "shardId-000000000007", Checkpoint: lease.TrimHorizon, Epoch: 4}); err != nil {
				t.Fatal(err)
			}
			cp := &fakeCheckpointer{lost: tt.lose, last: lease.ExtendedSequenceNumber{SequenceNumber: lease.TrimHorizon}}
			recs := batch("100", "200", "300")
			pctx := ctx
			if tt.cancel {
				var cancel context.CancelFunc
				pctx, cancel = context.WithCancel(ctx)
				time.AfterFunc(100*time.Millisecond, cancel)
			}
			err = p.ProcessRecords(pctx, consumer.ProcessRecordsInput{ShardID: "shardId-000000000007", Records: recs, Checkpointer: cp})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("ProcessRecords: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("ProcessRecords: %v, want an error with %q", err, tt.wantErr)
			case errors.Is(err, consumer.ErrLeaseLost) != tt.wantLost:
				t.Fatalf("ProcessRecords: %v; matches ErrLeaseLost: %v, want %v", err, errors.Is(err, consumer.ErrLeaseLost), tt.wantLost)
			}
			if tt.wantLost {
				p.LeaseLost(context.WithoutCancel(ctx))
			} else {
				if err != nil { // the worker retries what was not checkpointed
					if rest := after(recs, cp.LastExtendedSequenceNumber()); len(rest) > 0 {
						if err := p.ProcessRecords(ctx, consumer.ProcessRecordsInput{ShardID: "shardId-000000000007", Records: rest, Checkpointer: cp}); err != nil {
							t.Fatalf("retry: %v", err)
						}
					}
				}
				if tt.next != nil {
					if tt.mode == "exitidle" {
						select { // the child has exited before the next batch comes
						case <-p.(*Processor).child.exited:
						case <-time.After(10 * time.Second):
							t.Fatal("the child did not exit after its batch")
						}
					}
					if err := p.ProcessRecords(ctx, consumer.ProcessRecordsInput{ShardID: "shardId-000000000007", Records: batch(tt.next...), Checkpointer: cp}); err != nil {
						t.Fatalf("next batch: %v", err)
					}
				}
				if err := p.ShutdownRequested(ctx, cp); err != nil {
					t.Fatalf("ShutdownRequested: %v", err)
				}
			}

			f.Wait() // every child stopped has exited

			var got []string
			for _, c := range cp.all {
				got = append(got, c.SequenceNumber)
			}
			if !slices.Equal(got, tt.wantCheckpoints) {
				t.Errorf("checkpoints %v, want %v", got, tt.wantCheckpoints)
			}
			var inits, answers []string
			var last string
			processed := map[string]bool{}
			for _, s := range readSeen(t, logPath) {
				switch s.Got {
				case "initialize":
					inits = append(inits, s.Seq)
					if s.Epoch != "4" {
						t.Errorf("child got %s=%q, want 4", EnvEpoch, s.Epoch)
					}
				case "checkpointAnswer":
					answers = append(answers, *s.Answer)
				case "processRecords":
					for _, d := range strings.Split(strings.TrimSuffix(s.Data, ","), ",") {
						processed[d] = true
					}
				}
				last = s.Got
			}
			if !slices.Equal(inits, tt.wantInits) {
				t.Errorf("children initialized at %v, want %v", inits, tt.wantInits)
			}
			if !slices.Equal(answers, tt.wantAnswers) {
				t.Errorf("checkpoint answers %q, want %q", answers, tt.wantAnswers)
			}
			wantLast := "checkpointAnswer" // after shutdownRequested's checkpoint
			if tt.wantLost {
				wantLast = "leaseLost"
			}
			if last != wantLast {
				t.Errorf("the child's last event was %q, want %q", last, wantLast)
			}
			// Every record reached a child (base64 of "d100", ...).
			for _, d := range []string{"ZDEwMA==", "ZDIwMA==", "ZDMwMA=="} {
				if !processed[d] {
					t.Errorf("record data %s never reached a child (saw %v)", d, processed)
				}
			}
			if !strings.Contains(logBuf.String(), tt.wantLog) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, logBuf.String())
			}
		})
	}
}

// A slow child holds back its own shard only: another shard's child finishes its batch
// while the slow one still works.
func TestSlowChildHoldsBackItsShardOnly(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	start := func(mode string) *Processor {
		f, err := NewFactory(Config{Command: []string{exe}, WorkerID: "w1", ActionTimeout: 10 * time.Second,
			Env: []string{fakeModeEnv + "=" + mode, fakeLogEnv + "=" + filepath.Join(dir, mode+".jsonl"), fakeDelayEnv + "=3s"}})
		if err != nil {
			t.Fatal(err)
		}
		p := f.Processor("shardId-" + mode).(*Processor)
		if err := p.Initialize(t.Context(), consumer.InitializeInput{ShardID: "shardId-" + mode, Checkpoint: lease.TrimHorizon}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	slow, quick := start("slow"), start("happy")
	process := func(p *Processor) error {
		return p.ProcessRecords(t.Context(), consumer.ProcessRecordsInput{Records: batch("100"),
			Checkpointer: &fakeCheckpointer{last: lease.ExtendedSequenceNumber{SequenceNumber: lease.TrimHorizon}}})
	}
	slowDone := make(chan error, 1)
	go func() { slowDone <- process(slow) }()
	began := time.Now()
	if err := process(quick); err != nil {
		t.Fatal(err)
	}
	took := time.Since(began)
	select {
	case err := <-slowDone:
		t.Fatalf("the slow child finished (%v) before the quick one (%s)", err, took)
	default:
	}
	if took > 2*time.Second {
		t.Errorf("the quick child took %s beside a slow one", took)
	}
	if err := <-slowDone; err != nil {
		t.Errorf("slow child: %v", err)
	}
	slow.LeaseLost(t.Context())
	quick.LeaseLost(t.Context())
}

// A command that cannot run is refused when the factory is made, not at every lease.
func TestNewFactoryRefusesACommandThatCannotRun(t *testing.T) {
	t.Parallel()
	want := map[string]string{ // command -> what the error says
		"":                           "no command",
		"no-such-kcl-processor-7f3a": "executable file not found",
		"/nonexistent/app.js":        "no such file",
	}
	for command, says := range want {
		_, err := NewFactory(Config{Command: []string{command, "--flag"}})
		if err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("NewFactory(%q): %v, want an error with %q", command, err, says)
		}
	}
	if _, err := NewFactory(Config{}); err == nil {
		t.Error("NewFactory without a command succeeded")
	}
}
