// Package recordlog is the record log: the JSON lines in which the demo record processor
// of cmd/kds-consumer writes every record it processed, one file per worker, and which
// `kdsctl verify`, the chaos harness and the e2e tests read back to prove delivery.
//
// The format is one JSON object per line, fields in this order:
//
//	{"worker":"w1","shard":"shardId-000000000000","epoch":3,"seq":"4959...","pk":"pk-0001","data":"...","t":1767322245000000000}
//
// A user record of a KPL aggregate (package kpl) also has its sub-sequence number,
// "sub":3, after "seq"; a plain record (sub-sequence 0) has none, as before.
//
// A line is written and flushed before the batch it belongs to is checkpointed. A worker
// killed mid-write leaves its file's last line without its newline; readers skip such a
// torn last line (and count it), since it may also be a line still being written.
package recordlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// Ext is the record log files' extension: a worker's log is <dir>/<worker id>.jsonl.
const Ext = ".jsonl"

// Line is one line of a record log: one record processed once.
type Line struct {
	Worker string `json:"worker"`
	Shard  string `json:"shard"`
	// Epoch is the lease epoch the record was processed under.
	Epoch int64  `json:"epoch"`
	Seq   string `json:"seq"`
	// Sub is a KPL user record's sub-sequence number (0 for a plain record).
	Sub int64  `json:"sub,omitempty"`
	PK  string `json:"pk"`
	// Data is the record's data as a string (invalid UTF-8 replaced by U+FFFD).
	Data string `json:"data"`
	// T is when the record was processed (Unix nanoseconds), to order processing across
	// workers on one machine. A worker stamps a whole batch with one T.
	T int64 `json:"t"`
	// Order is the line's place among the lines read together (not written): it breaks
	// ties of T.
	Order int `json:"-"`
}

// Before orders lines by processing time, then by their place in the logs.
func (l Line) Before(o Line) bool {
	if l.T != o.T {
		return l.T < o.T
	}
	return l.Order < o.Order
}

// Writer appends processed records to one worker's record log. A nil *Writer writes
// nothing.
type Writer struct {
	mu     sync.Mutex
	f      *os.File
	w      *bufio.Writer
	worker string
}

// Open opens (creating dir and the file if needed) the record log of worker in dir for
// appending. With dir empty there is no record log: it returns nil and no error.
func Open(dir, worker string) (*Writer, error) {
	if dir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("record log: %w", err)
	}
	path := filepath.Join(dir, worker+Ext)
	if err := dropTornLine(path); err != nil {
		return nil, fmt.Errorf("record log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("record log: %w", err)
	}
	return &Writer{f: f, w: bufio.NewWriter(f), worker: worker}, nil
}

// dropTornLine cuts a last line without its newline off the log at path: an earlier run
// of the worker was killed while writing it. Appending after it would glue the next line
// to it, one bad line in the middle of the log. Nothing is lost: Append returns before the
// batch is checkpointed, so a torn batch is delivered again.
func dropTornLine(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	// Read backwards to the last newline; a line is far shorter than the file.
	buf := make([]byte, 64<<10)
	for end := st.Size(); end > 0; {
		start := max(0, end-int64(len(buf)))
		n, err := f.ReadAt(buf[:end-start], start)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		chunk := buf[:n]
		if end == st.Size() && len(chunk) > 0 && chunk[len(chunk)-1] == '\n' {
			return nil // The last line is whole.
		}
		if i := bytes.LastIndexByte(chunk, '\n'); i >= 0 {
			return f.Truncate(start + int64(i) + 1)
		}
		end = start
	}
	return f.Truncate(0)
}

// Append writes a line for each of a batch of records of shard processed under epoch, all
// stamped with the current time, and flushes them: call it before checkpointing the batch.
func (w *Writer) Append(shard string, epoch int64, recs []stream.Record) error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	enc := json.NewEncoder(w.w)
	now := time.Now().UnixNano()
	for _, rec := range recs {
		line := Line{Worker: w.worker, Shard: shard, Epoch: epoch,
			Seq: rec.SequenceNumber, Sub: rec.SubSequenceNumber, PK: rec.PartitionKey, Data: string(rec.Data), T: now}
		if err := enc.Encode(line); err != nil {
			return fmt.Errorf("record log: %w", err)
		}
	}
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("record log: %w", err)
	}
	return nil
}

// Close flushes and closes the file.
func (w *Writer) Close() error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.w.Flush(); err != nil {
		return err
	}
	return w.f.Close()
}

// LineError is a line of a record log that is not a processed record: it does not parse,
// or lacks its shard or sequence number.
type LineError struct {
	File string // as given to the reader
	Line int    // from 1
	Text string // the line, cut to maxQuoted bytes
	Err  error
}

const maxQuoted = 200

var errIncomplete = errors.New("no shard or sequence number")

func (e *LineError) Error() string {
	return fmt.Sprintf("record log %s line %d: %v: %q", e.File, e.Line, e.Err, e.Text)
}

func (e *LineError) Unwrap() error { return e.Err }

// Logs is what was read from record logs.
type Logs struct {
	// Lines are the records, in the order read; each one's Order is its index.
	Lines []Line
	// Bad are the lines that are not records, skipped. A reader that wants no such line
	// uses Err.
	Bad []*LineError
	// Torn counts the files whose last line had no newline: a line cut by a killed worker,
	// or one still being written. Such a line is skipped and is not in Bad.
	Torn int
}

// Err returns the first bad line, or nil when every line was a record.
func (l *Logs) Err() error {
	if len(l.Bad) == 0 {
		return nil
	}
	if len(l.Bad) == 1 {
		return l.Bad[0]
	}
	return fmt.Errorf("%w (and %d more bad lines)", l.Bad[0], len(l.Bad)-1)
}

// Read reads one record log from r, appending to l; name names it in errors. It fails
// only when r does.
func (l *Logs) Read(r io.Reader, name string) error {
	br := bufio.NewReaderSize(r, 64*1024)
	for n := 1; ; n++ {
		text, err := br.ReadBytes('\n')
		if err == io.EOF {
			if len(text) > 0 {
				l.Torn++
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("record log %s: %w", name, err)
		}
		text = text[:len(text)-1]
		var line Line
		if err := json.Unmarshal(text, &line); err != nil || line.Shard == "" || line.Seq == "" {
			if err == nil {
				err = errIncomplete
			}
			l.Bad = append(l.Bad, &LineError{File: name, Line: n, Text: string(text[:min(len(text), maxQuoted)]), Err: err})
			continue
		}
		line.Order = len(l.Lines)
		l.Lines = append(l.Lines, line)
	}
}

// ReadFile reads the record log at path, appending to l.
func (l *Logs) ReadFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("record log: %w", err)
	}
	defer f.Close()
	return l.Read(f, path)
}

// ReadDir reads every record log (*.jsonl) in dir, in file name order. A missing dir
// holds no logs (workers create it when they start).
func ReadDir(dir string) (*Logs, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*"+Ext))
	if err != nil {
		return nil, fmt.Errorf("record logs: %w", err)
	}
	sort.Strings(files)
	l := &Logs{}
	for _, f := range files {
		if err := l.ReadFile(f); err != nil {
			return nil, err
		}
	}
	return l, nil
}
