package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// Delivery is one line of a worker's record log: one record processed once.
type Delivery struct {
	Worker string `json:"worker"`
	Shard  string `json:"shard"`
	Epoch  int64  `json:"epoch"`
	Seq    string `json:"seq"`
	PK     string `json:"pk"`
	Data   string `json:"data"`
	T      int64  `json:"t"` // Unix nanoseconds when processed
	// Order is the line's place in the logs: a worker stamps a whole batch with one T.
	Order int `json:"-"`
}

func (d Delivery) before(o Delivery) bool {
	if d.T != o.T {
		return d.T < o.T
	}
	return d.Order < o.Order
}

// Produced is a record found in the stream, with the producer's payload.
type Produced struct {
	Shard, Seq string
	Run, Key   string
	N          int
}

// payload is what `kdsctl produce` writes into every record.
type payload struct {
	Run string `json:"run"`
	Key string `json:"key"`
	N   int    `json:"n"`
}

// ReadRecordLogs parses every *.jsonl file in dir. A last line without its newline was
// being written when its worker was killed and is skipped; any other bad line is an error.
func ReadRecordLogs(dir string) ([]Delivery, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []Delivery
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("record log: %w", err)
		}
		i := bytes.LastIndexByte(data, '\n')
		if i < 0 {
			continue
		}
		for n, line := range bytes.Split(data[:i], []byte("\n")) {
			var d Delivery
			if err := json.Unmarshal(line, &d); err != nil {
				return nil, fmt.Errorf("record log %s line %d: %w", filepath.Base(f), n+1, err)
			}
			d.Order = len(out)
			out = append(out, d)
		}
	}
	return out, nil
}

// ReadStream reads every record of every shard from TRIM_HORIZON (closed shards to their
// end, open ones until caught up) and returns those of run (all runs if run is empty).
func ReadStream(ctx context.Context, k *stream.Kinesis, run string) ([]Produced, error) {
	shards, err := k.ListShards(ctx)
	if err != nil {
		return nil, err
	}
	var out []Produced
	for _, sh := range shards {
		recs, err := k.ReadShard(ctx, sh)
		if err != nil {
			return nil, fmt.Errorf("read shard %s: %w", sh.ID, err)
		}
		for _, r := range recs {
			var p payload
			if json.Unmarshal(r.Data, &p) != nil || p.Key == "" || (run != "" && p.Run != run) {
				continue
			}
			out = append(out, Produced{Shard: sh.ID, Seq: r.SequenceNumber, Run: p.Run, Key: p.Key, N: p.N})
		}
	}
	return out, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
