package kinesisstream_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"

	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
	"github.com/kds-lease-manager/kds-lease-manager/kinesisstream"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

// newStream creates a stream of shards shards for this test and returns the adapter.
func newStream(t *testing.T, shards int) (*kinesisstream.Kinesis, *kinesis.Client) {
	t.Helper()
	name := enginetest.UniqueName(t, "stream")
	enginetest.CreateStream(t, name, shards)
	client := enginetest.Kinesis(t)
	return kinesisstream.New(client, name), client
}

func putRecords(t *testing.T, client *kinesis.Client, streamName string, n int) []string {
	t.Helper()
	var seqs []string
	for i := range n {
		out, err := client.PutRecord(t.Context(), &kinesis.PutRecordInput{
			StreamName:   aws.String(streamName),
			PartitionKey: aws.String("pk"),
			Data:         fmt.Appendf(nil, "record-%d", i),
		})
		if err != nil {
			t.Fatalf("PutRecord: %v", err)
		}
		seqs = append(seqs, aws.ToString(out.SequenceNumber))
	}
	return seqs
}

// readAll reads a shard from pos until the iterator runs out or a read comes back empty,
// returning the records and the last batch.
func readAll(t *testing.T, k *kinesisstream.Kinesis, shardID string, pos stream.Position) ([]stream.Record, stream.Batch) {
	t.Helper()
	it, err := k.GetShardIterator(t.Context(), shardID, pos)
	if err != nil {
		t.Fatalf("GetShardIterator(%s, %+v): %v", shardID, pos, err)
	}
	var recs []stream.Record
	for range 100 {
		b, err := k.GetRecords(t.Context(), it, 3) // small limit to exercise iteration
		if err != nil {
			t.Fatalf("GetRecords: %v", err)
		}
		recs = append(recs, b.Records...)
		if b.NextIterator == "" || len(b.Records) == 0 {
			return recs, b
		}
		it = b.NextIterator
	}
	t.Fatal("shard never ran out of records")
	return nil, stream.Batch{}
}

func data(recs []stream.Record) []string {
	var d []string
	for _, r := range recs {
		d = append(d, string(r.Data))
	}
	return d
}

func TestKinesisListShardsFresh(t *testing.T) {
	k, _ := newStream(t, 4)
	shards, err := k.ListShards(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(shards) != 4 {
		t.Fatalf("got %d shards, want 4: %+v", len(shards), shards)
	}
	for i, s := range shards {
		if want := fmt.Sprintf("shardId-%012d", i); s.ID != want {
			t.Errorf("shard %d id = %q, want %q", i, s.ID, want)
		}
		if s.Closed || len(s.Parents()) != 0 {
			t.Errorf("fresh shard %+v is closed or has parents", s)
		}
	}
}

func TestKinesisReadRecords(t *testing.T) {
	k, client := newStream(t, 1)
	const shard = "shardId-000000000000"
	before := time.Now().Add(-time.Second)
	seqs := putRecords(t, client, k.StreamName(), 7)

	recs, last := readAll(t, k, shard, stream.Position{Type: stream.TrimHorizon})
	want := []string{"record-0", "record-1", "record-2", "record-3", "record-4", "record-5", "record-6"}
	if got := data(recs); !slices.Equal(got, want) {
		t.Fatalf("TRIM_HORIZON read %v, want %v", got, want)
	}
	for i, r := range recs {
		if r.SequenceNumber != seqs[i] || r.PartitionKey != "pk" || r.ApproximateArrivalTimestamp.IsZero() {
			t.Errorf("record %d = %+v, want sequence %s, key pk and an arrival time", i, r, seqs[i])
		}
	}
	if last.NextIterator == "" {
		t.Error("open shard returned an empty NextIterator")
	}

	tests := []struct {
		pos  stream.Position
		want []string
	}{
		{stream.Position{Type: stream.AfterSequenceNumber, SequenceNumber: seqs[4]}, want[5:]},
		{stream.Position{Type: stream.AtSequenceNumber, SequenceNumber: seqs[4]}, want[4:]},
		{stream.Position{Type: stream.AtTimestamp, Timestamp: before}, want},
		{stream.Position{Type: stream.Latest}, nil},
	}
	for _, tt := range tests {
		recs, _ := readAll(t, k, shard, tt.pos)
		if got := data(recs); !slices.Equal(got, tt.want) {
			t.Errorf("%s read %v, want %v", tt.pos.Type, got, tt.want)
		}
	}
}

func TestKinesisReshard(t *testing.T) {
	k, client := newStream(t, 2)
	putRecords(t, client, k.StreamName(), 5)
	_, err := client.UpdateShardCount(t.Context(), &kinesis.UpdateShardCountInput{
		StreamName:       aws.String(k.StreamName()),
		TargetShardCount: aws.Int32(4),
		ScalingType:      types.ScalingTypeUniformScaling,
	})
	if err != nil {
		t.Fatalf("UpdateShardCount: %v", err)
	}
	waitActive(t, client, k.StreamName())

	shards, err := k.ListShards(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("shards after 2->4: %+v", shards)
	byID := make(map[string]stream.Shard)
	var open, closed []stream.Shard
	for _, s := range shards {
		byID[s.ID] = s
		if s.Closed {
			closed = append(closed, s)
		} else {
			open = append(open, s)
		}
	}
	if len(open) != 4 {
		t.Errorf("%d open shards, want 4", len(open))
	}
	for _, id := range []string{"shardId-000000000000", "shardId-000000000001"} {
		if !byID[id].Closed {
			t.Errorf("parent %s is not closed", id)
		}
	}
	// Every open shard descends from a closed shard that ListShards also returned.
	children := make(map[string][]string) // parent -> children
	for _, s := range open {
		if len(s.Parents()) == 0 {
			t.Errorf("open shard %s has no parent", s.ID)
		}
		for _, p := range s.Parents() {
			if !byID[p].Closed {
				t.Errorf("shard %s has parent %s, which is not a closed shard of the stream", s.ID, p)
			}
			children[p] = append(children[p], s.ID)
		}
	}

	// Reading a closed parent to its end yields its records, then no iterator and the
	// children.
	var total int
	for _, parent := range closed {
		recs, last := readAll(t, k, parent.ID, stream.Position{Type: stream.TrimHorizon})
		total += len(recs)
		if last.NextIterator != "" {
			t.Errorf("closed shard %s: NextIterator %q at the end, want empty", parent.ID, last.NextIterator)
		}
		var got []string
		for _, c := range last.ChildShards {
			got = append(got, c.ShardID)
			if !slices.Contains(c.ParentShardIDs, parent.ID) {
				t.Errorf("child %s of %s lists parents %v", c.ShardID, parent.ID, c.ParentShardIDs)
			}
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(children[parent.ID]))
		if !slices.Equal(got, want) {
			t.Errorf("closed shard %s: ChildShards %v, want %v (from ListShards)", parent.ID, got, want)
		}
	}
	if total != 5 {
		t.Errorf("read %d records from the closed parents, want 5", total)
	}
}

func waitActive(t *testing.T, client *kinesis.Client, name string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out, err := client.DescribeStreamSummary(t.Context(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		if err != nil {
			t.Fatalf("DescribeStreamSummary: %v", err)
		}
		if out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive {
			return
		}
	}
	t.Fatalf("stream %s not ACTIVE after resharding", name)
}

func TestKinesisMissingStream(t *testing.T) {
	k := kinesisstream.New(enginetest.Kinesis(t), enginetest.UniqueName(t, "missing"))
	_, err := k.ListShards(t.Context())
	if !errors.Is(err, stream.ErrStreamNotFound) {
		t.Errorf("ListShards: err = %v, want ErrStreamNotFound", err)
	}
	var rnf *types.ResourceNotFoundException
	if !errors.As(err, &rnf) {
		t.Errorf("ListShards: the SDK error is not in the chain: %v", err)
	}
	_, err = k.GetShardIterator(t.Context(), "shardId-000000000000", stream.Position{Type: stream.TrimHorizon})
	if !errors.Is(err, stream.ErrStreamNotFound) {
		t.Errorf("GetShardIterator: err = %v, want ErrStreamNotFound", err)
	}

	err = k.CheckStream(t.Context())
	if !errors.Is(err, stream.ErrStreamNotFound) {
		t.Fatalf("CheckStream: err = %v, want ErrStreamNotFound", err)
	}
	for _, want := range []string{k.StreamName(), "create it or set STREAM_NAME", "region us-east-1", enginetest.Endpoint()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CheckStream error lacks %q: %v", want, err)
		}
	}
	t.Logf("CheckStream: %v", err)
}

func TestKinesisCheckStream(t *testing.T) {
	k, _ := newStream(t, 1)
	if err := k.CheckStream(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// fakeAPI is a KinesisAPI whose calls return canned results and record their inputs.
type fakeAPI struct {
	err error

	listPages   []*kinesis.ListShardsOutput
	listInputs  []*kinesis.ListShardsInput
	iterInputs  []*kinesis.GetShardIteratorInput
	records     *kinesis.GetRecordsOutput
	recInputs   []*kinesis.GetRecordsInput
	description *kinesis.DescribeStreamSummaryOutput
}

func (f *fakeAPI) ListShards(_ context.Context, in *kinesis.ListShardsInput, _ ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	f.listInputs = append(f.listInputs, in)
	if f.err != nil {
		return nil, f.err
	}
	page := f.listPages[0]
	f.listPages = f.listPages[1:]
	return page, nil
}

func (f *fakeAPI) GetShardIterator(_ context.Context, in *kinesis.GetShardIteratorInput, _ ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error) {
	f.iterInputs = append(f.iterInputs, in)
	if f.err != nil {
		return nil, f.err
	}
	return &kinesis.GetShardIteratorOutput{ShardIterator: aws.String("it")}, nil
}

func (f *fakeAPI) GetRecords(_ context.Context, in *kinesis.GetRecordsInput, _ ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error) {
	f.recInputs = append(f.recInputs, in)
	if f.err != nil {
		return nil, f.err
	}
	return f.records, nil
}

func (f *fakeAPI) DescribeStreamSummary(_ context.Context, _ *kinesis.DescribeStreamSummaryInput, _ ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error) {
	if f.err != nil {
		return nil, f.err
	}
	return f.description, nil
}

func TestKinesisErrorMapping(t *testing.T) {
	generic := func(code string) error {
		return &smithy.GenericAPIError{Code: code, Message: "service says " + code}
	}
	tests := []struct {
		name string
		err  error
		want error // nil: no sentinel
	}{
		{"throughput", &types.ProvisionedThroughputExceededException{Message: aws.String("slow down")}, stream.ErrThrottled},
		{"limit", &types.LimitExceededException{Message: aws.String("too many")}, stream.ErrThrottled},
		{"kms throttling", &types.KMSThrottlingException{Message: aws.String("kms busy")}, stream.ErrThrottled},
		{"generic throttling", generic("ThrottlingException"), stream.ErrThrottled},
		{"expired iterator", &types.ExpiredIteratorException{Message: aws.String("too old")}, stream.ErrExpiredIterator},
		{"not found", &types.ResourceNotFoundException{Message: aws.String("no such stream")}, stream.ErrStreamNotFound},
		{"access denied typed", &types.AccessDeniedException{Message: aws.String("nope")}, stream.ErrAccessDenied},
		{"access denied generic", generic("AccessDeniedException"), stream.ErrAccessDenied},
		{"kms access denied", &types.KMSAccessDeniedException{Message: aws.String("kms nope")}, stream.ErrAccessDenied},
		{"bad credentials", generic("UnrecognizedClientException"), stream.ErrAccessDenied},
		{"expired token", generic("ExpiredTokenException"), stream.ErrAccessDenied},
		{"invalid argument", &types.InvalidArgumentException{Message: aws.String("bad arg")}, nil},
		{"not an API error", errors.New("connection reset"), nil},
		{"wrapped API error", fmt.Errorf("retries exhausted: %w", &types.ProvisionedThroughputExceededException{Message: aws.String("slow")}), stream.ErrThrottled},
	}
	sentinels := []error{stream.ErrThrottled, stream.ErrExpiredIterator, stream.ErrStreamNotFound, stream.ErrAccessDenied}
	calls := map[string]func(*kinesisstream.Kinesis) error{
		"ListShards": func(k *kinesisstream.Kinesis) error { _, err := k.ListShards(t.Context()); return err },
		"GetShardIterator": func(k *kinesisstream.Kinesis) error {
			_, err := k.GetShardIterator(t.Context(), "shardId-000000000000", stream.Position{Type: stream.Latest})
			return err
		},
		"GetRecords": func(k *kinesisstream.Kinesis) error { _, err := k.GetRecords(t.Context(), "it", 10); return err },
	}
	for _, tt := range tests {
		for op, call := range calls {
			t.Run(tt.name+"/"+op, func(t *testing.T) {
				err := call(kinesisstream.New(&fakeAPI{err: tt.err}, "orders"))
				if err == nil {
					t.Fatal("no error")
				}
				for _, s := range sentinels {
					if got := errors.Is(err, s); got != (s == tt.want) {
						t.Errorf("errors.Is(err, %v) = %v; err = %v", s, got, err)
					}
				}
				if !errors.Is(err, tt.err) {
					t.Errorf("original error not in chain: %v", err)
				}
				if !strings.Contains(err.Error(), tt.err.Error()) || !strings.Contains(err.Error(), `"orders"`) ||
					!strings.Contains(err.Error(), op) {
					t.Errorf("message %q lacks the original message, stream or operation", err)
				}
			})
		}
	}
}

func TestKinesisListShardsPaginates(t *testing.T) {
	closed := &types.SequenceNumberRange{StartingSequenceNumber: aws.String("1"), EndingSequenceNumber: aws.String("9")}
	open := &types.SequenceNumberRange{StartingSequenceNumber: aws.String("10")}
	f := &fakeAPI{listPages: []*kinesis.ListShardsOutput{
		{Shards: []types.Shard{{ShardId: aws.String("s0"), SequenceNumberRange: closed}}, NextToken: aws.String("tok1")},
		{Shards: []types.Shard{
			{ShardId: aws.String("s1"), ParentShardId: aws.String("s0"), SequenceNumberRange: open,
				HashKeyRange: &types.HashKeyRange{StartingHashKey: aws.String("0"), EndingHashKey: aws.String("99")}},
			{ShardId: aws.String("s2"), ParentShardId: aws.String("s0"), AdjacentParentShardId: aws.String("sx"), SequenceNumberRange: open},
		}},
	}}
	shards, err := kinesisstream.New(f, "orders").ListShards(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []stream.Shard{
		{ID: "s0", Closed: true},
		{ID: "s1", ParentShardID: "s0", StartingHashKey: "0", EndingHashKey: "99"},
		{ID: "s2", ParentShardID: "s0", AdjacentParentShardID: "sx"},
	}
	if !slices.Equal(shards, want) {
		t.Errorf("shards = %+v, want %+v", shards, want)
	}
	if len(f.listInputs) != 2 {
		t.Fatalf("%d ListShards calls, want 2", len(f.listInputs))
	}
	if aws.ToString(f.listInputs[0].StreamName) != "orders" || f.listInputs[0].NextToken != nil {
		t.Errorf("first call = %+v", f.listInputs[0])
	}
	if f.listInputs[1].StreamName != nil || aws.ToString(f.listInputs[1].NextToken) != "tok1" {
		t.Errorf("second call must carry only the token: %+v", f.listInputs[1])
	}
}

func TestKinesisGetShardIteratorInputs(t *testing.T) {
	ts := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		pos     stream.Position
		wantSeq string
		wantTS  time.Time
		wantErr bool
	}{
		{pos: stream.Position{Type: stream.TrimHorizon}},
		{pos: stream.Position{Type: stream.Latest}},
		{pos: stream.Position{Type: stream.AtSequenceNumber, SequenceNumber: "42"}, wantSeq: "42"},
		{pos: stream.Position{Type: stream.AfterSequenceNumber, SequenceNumber: "43"}, wantSeq: "43"},
		{pos: stream.Position{Type: stream.AtTimestamp, Timestamp: ts}, wantTS: ts},
		{pos: stream.Position{Type: stream.AfterSequenceNumber}, wantErr: true},
		{pos: stream.Position{Type: stream.AtTimestamp}, wantErr: true},
		{pos: stream.Position{Type: "SOMEWHERE"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(string(tt.pos.Type), func(t *testing.T) {
			f := &fakeAPI{}
			it, err := kinesisstream.New(f, "orders").GetShardIterator(t.Context(), "s1", tt.pos)
			if tt.wantErr {
				if err == nil || len(f.iterInputs) != 0 {
					t.Fatalf("err = %v after %d calls, want a local validation error", err, len(f.iterInputs))
				}
				return
			}
			if err != nil || it != "it" {
				t.Fatalf("got %q, %v", it, err)
			}
			in := f.iterInputs[0]
			if string(in.ShardIteratorType) != string(tt.pos.Type) || aws.ToString(in.ShardId) != "s1" ||
				aws.ToString(in.StreamName) != "orders" || aws.ToString(in.StartingSequenceNumber) != tt.wantSeq ||
				!aws.ToTime(in.Timestamp).Equal(tt.wantTS) {
				t.Errorf("input = %+v", in)
			}
		})
	}
}

func TestKinesisGetRecordsMapping(t *testing.T) {
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	f := &fakeAPI{records: &kinesis.GetRecordsOutput{
		Records: []types.Record{{
			SequenceNumber: aws.String("7"), PartitionKey: aws.String("pk"), Data: []byte("hi"),
			ApproximateArrivalTimestamp: aws.Time(at),
		}},
		MillisBehindLatest: aws.Int64(1500),
		ChildShards: []types.ChildShard{
			{ShardId: aws.String("c1"), ParentShards: []string{"p"}},
			{ShardId: aws.String("c2"), ParentShards: []string{"p", "q"}},
		},
		// NextShardIterator nil: the shard is closed and fully read.
	}}
	k := kinesisstream.New(f, "orders")
	b, err := k.GetRecords(t.Context(), "it", 50_000)
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToInt32(f.recInputs[0].Limit); got != 10000 {
		t.Errorf("limit sent = %d, want the service maximum 10000", got)
	}
	if b.NextIterator != "" || b.MillisBehindLatest != 1500 || len(b.Records) != 1 || len(b.ChildShards) != 2 {
		t.Fatalf("batch = %+v", b)
	}
	if r := b.Records[0]; r.SequenceNumber != "7" || r.PartitionKey != "pk" || string(r.Data) != "hi" || !r.ApproximateArrivalTimestamp.Equal(at) {
		t.Errorf("record = %+v", r)
	}
	if c := b.ChildShards[1]; c.ShardID != "c2" || !slices.Equal(c.ParentShardIDs, []string{"p", "q"}) {
		t.Errorf("child = %+v", c)
	}
	if _, err := k.GetRecords(t.Context(), "it", 0); err != nil || f.recInputs[1].Limit != nil {
		t.Errorf("limit 0 should leave Limit unset: %v, %+v", err, f.recInputs[1])
	}
}

func TestKinesisCheckStreamErrors(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&types.ResourceNotFoundException{Message: aws.String("x")}, `stream "orders" not found`},
		{&types.AccessDeniedException{Message: aws.String("x")}, "check the credentials"},
		{errors.New("dial tcp: connection refused"), "cannot reach stream"},
	}
	for _, tt := range tests {
		err := kinesisstream.New(&fakeAPI{err: tt.err}, "orders").CheckStream(t.Context())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("CheckStream with %v: %v, want it to mention %q", tt.err, err, tt.want)
		}
	}
}
