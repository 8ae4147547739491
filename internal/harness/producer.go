package harness

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kds-lease-manager/kds-lease-manager/internal/delivery"
)

// Sent is a record Kinesis accepted from a Producer: its shard, sequence number and
// content (PK and Data), which delivery.Check compares with every delivery.
type Sent = delivery.Record

// producerKey is a partition key bound to one hash key for its whole life, so that its
// records stay in one shard, or move from a parent to a child after a reshard: the order
// of its records can then be checked.
type producerKey struct {
	name    string
	hashKey string
	next    int // data sequence number of the key's next record
}

// Producer puts records with partition keys "pk-<n>" and data "<key>:<seq-in-key>" from
// the test process itself (kdsctl produce is the product's producer). All puts are
// serialized, and a put carries at most one record per key and retries failed records
// before anything else is sent, so each key's records enter Kinesis in data order.
type Producer struct {
	kin    *kinesis.Client
	stream string

	mu     sync.Mutex
	keys   []*producerKey
	bound  map[string]bool // hash keys that have a key
	sent   []Sent
	cursor int

	bgStop chan struct{}
	bgDone chan struct{}
	bgErr  error
}

// NewProducer returns a producer for the stream without keys; see BindKeys.
func NewProducer(kin *kinesis.Client, stream string) *Producer {
	return &Producer{kin: kin, stream: stream, bound: map[string]bool{}}
}

// callTimeout bounds each Kinesis call of the producer.
const callTimeout = 10 * time.Second

// BindKeys adds a key for every open shard whose starting hash key has none yet, so that
// each open shard receives records. It returns the new keys' names.
func (p *Producer) BindKeys(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	shards, err := listShards(ctx, p.kin, p.stream)
	if err != nil {
		return nil, fmt.Errorf("list shards: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var added []string
	for _, s := range shards {
		hk := aws.ToString(s.HashKeyRange.StartingHashKey)
		if (s.SequenceNumberRange != nil && s.SequenceNumberRange.EndingSequenceNumber != nil) || p.bound[hk] {
			continue
		}
		k := &producerKey{name: fmt.Sprintf("pk-%d", len(p.keys)), hashKey: hk}
		p.keys = append(p.keys, k)
		p.bound[hk] = true
		added = append(added, k.name)
	}
	return added, nil
}

func listShards(ctx context.Context, kin *kinesis.Client, streamName string) ([]ktypes.Shard, error) {
	var shards []ktypes.Shard
	in := &kinesis.ListShardsInput{StreamName: aws.String(streamName)}
	for {
		out, err := kin.ListShards(ctx, in)
		if err != nil {
			return nil, err
		}
		shards = append(shards, out.Shards...)
		if aws.ToString(out.NextToken) == "" {
			return shards, nil
		}
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
}

// PutRound puts one record for every key, rounds times.
func (p *Producer) PutRound(ctx context.Context, rounds int) error {
	for range rounds {
		p.mu.Lock()
		err := p.putLocked(ctx, p.keys)
		p.mu.Unlock()
		if err != nil {
			return fmt.Errorf("put records: %w", err)
		}
	}
	return nil
}

// putLocked puts one record for each key (at most 500) and retries failed entries until
// Kinesis accepted all of them.
func (p *Producer) putLocked(ctx context.Context, keys []*producerKey) error {
	for start := 0; start < len(keys); start += 500 {
		batch := keys[start:min(len(keys), start+500)]
		pending := make([]int, len(batch))
		entries := make([]ktypes.PutRecordsRequestEntry, len(batch))
		for i, k := range batch {
			pending[i] = i
			entries[i] = ktypes.PutRecordsRequestEntry{
				PartitionKey:    aws.String(k.name),
				ExplicitHashKey: aws.String(k.hashKey),
				Data:            fmt.Appendf(nil, "%s:%d", k.name, k.next),
			}
		}
		for attempt := 0; len(pending) > 0; attempt++ {
			if attempt == 50 {
				return fmt.Errorf("%d records still refused after %d attempts", len(pending), attempt)
			}
			if attempt > 0 {
				if err := sleep(ctx, 100*time.Millisecond); err != nil {
					return err
				}
			}
			req := make([]ktypes.PutRecordsRequestEntry, len(pending))
			for i, j := range pending {
				req[i] = entries[j]
			}
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			out, err := p.kin.PutRecords(cctx, &kinesis.PutRecordsInput{StreamName: aws.String(p.stream), Records: req})
			cancel()
			if err != nil {
				continue // nothing was stored; send the same records again
			}
			var still []int
			for i, res := range out.Records {
				j := pending[i]
				if res.ErrorCode != nil {
					still = append(still, j)
					continue
				}
				k := batch[j]
				p.sent = append(p.sent, Sent{Shard: aws.ToString(res.ShardId), Seq: aws.ToString(res.SequenceNumber),
					PK: k.name, Data: string(entries[j].Data)})
				k.next++
			}
			pending = still
		}
	}
	return nil
}

// Start produces in the background until Stop: every 250ms one record for each of the
// next perTick keys, round robin (perTick*4 records per second).
func (p *Producer) Start(perTick int) {
	p.bgStop, p.bgDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.bgDone)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.bgStop:
				return
			case <-tick.C:
			}
			p.mu.Lock()
			var keys []*producerKey
			for range min(perTick, len(p.keys)) {
				keys = append(keys, p.keys[p.cursor%len(p.keys)])
				p.cursor++
			}
			err := p.putLocked(context.Background(), keys)
			p.mu.Unlock()
			if err != nil {
				p.bgErr = err
				return
			}
		}
	}()
}

// Running reports whether background production was started and not stopped.
func (p *Producer) Running() bool { return p.bgStop != nil }

// Stop ends background production and returns its error, if it failed.
func (p *Producer) Stop() error {
	close(p.bgStop)
	<-p.bgDone
	p.bgStop = nil
	if p.bgErr != nil {
		return fmt.Errorf("background producer: %w", p.bgErr)
	}
	return nil
}

// Sent returns a copy of what Kinesis accepted so far.
func (p *Producer) Sent() []Sent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.sent)
}
