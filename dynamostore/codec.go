package dynamostore

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// Attribute names. Lease attributes follow the KCL's names.
const (
	attrItemVersion = "itemVersion"

	attrLeaseKey       = "leaseKey"
	attrLeaseOwner     = "leaseOwner"
	attrLeaseCounter   = "leaseCounter"
	attrCheckpoint     = "checkpoint"
	attrCheckpointSub  = "checkpointSubSequenceNumber"
	attrMillisBehind   = "millisBehindLatest"
	attrStartTimestamp = "startTimestamp"
	// attrParentShardID is the KCL's attribute for a lease's parents, a string set (the
	// name is singular, the value a set). attrLegacyParents is the name versions of this
	// project before KCL table adoption wrote; it is still read, from items without
	// attrParentShardID, and no longer written.
	attrParentShardID = "parentShardId"
	attrLegacyParents = "parentShardIds"

	// The KCL's other lease attributes (KCL 2.x and 3.x DynamoDBLeaseSerializer), kept
	// so that a KCL fleet can take the table back. Our writes set or remove only the
	// attributes they name (UpdateItem), so any other attribute survives them.
	attrChildShardIDs   = "childShardIds"                // SS, written with SHARD_END
	attrOwnerSwitches   = "ownerSwitchesSinceCheckpoint" // N, +1 on a change of owner, 0 on a checkpoint
	attrStartingHashKey = "startingHashKey"              // S, hashKeyRangeForLease's start
	attrEndingHashKey   = "endingHashKey"                // S, hashKeyRangeForLease's end
	// A KCL two-phase checkpoint in progress; a checkpoint of ours replaces it, as the
	// KCL's own checkpoint does.
	attrPendingCheckpoint      = "pendingCheckpoint"
	attrPendingCheckpointSub   = "pendingCheckpointSubSequenceNumber"
	attrPendingCheckpointState = "pendingCheckpointState"
	// attrCheckpointOwner is KCL 3.x's graceful hand-off marker: the owner that still
	// checkpoints while leaseOwner is already the next one. A take or a release of ours
	// removes it, as the KCL's own take and eviction do (its conditions expect it absent
	// once a lease changed hands).
	attrCheckpointOwner = "checkpointOwner"
	// attrStreamName marks a KCL multi-stream lease (leaseKey
	// account:stream:creationEpoch:shardId), which this single-stream consumer cannot use.
	attrStreamName = "streamName"

	attrWorkerID    = "worker_id"
	attrIncarnation = "incarnation"
	attrHeartbeat   = "heartbeat"
	attrState       = "state"
	attrLeasesHeld  = "leases_held"
	attrLastSeen    = "last_seen"
	attrStartedAt   = "started_at"

	attrCoordinatorID      = "coordinator_id"
	attrEpoch              = "epoch"
	attrVersion            = "version"
	attrMaxLeases          = "max_leases_per_worker"
	attrTargetLeases       = "target_leases_per_worker"
	attrShardCount         = "shard_count"
	attrWorkerCount        = "worker_count"
	attrLiveWorkers        = "live_workers"
	attrCap                = "cap"
	attrUnownedShards      = "unowned_shards"
	attrRecommendedWorkers = "recommended_workers"
	attrLeaseGeneration    = "lease_generation"
	attrUpdatedAt          = "updated_at"
	attrInitialPosition    = "initial_position"
	attrInitialTimestamp   = "initial_timestamp"
	attrDeadWorkers        = "dead_workers"
	attrOwnedLeases        = "owned_leases"
	attrRecheckWorkers     = "recheck_workers"
	attrWaitingParents     = "waiting_parents"
	attrCoordIncarnation   = "coordinator_incarnation"
	attrCoordHeartbeat     = "coordinator_heartbeat"
)

// itemVersion is the format this code writes and the newest it can read.
const itemVersion = 1

// decodeError says which attribute of an item is wrong and how.
type decodeError struct {
	attr   string
	reason string
}

func (e *decodeError) Error() string { return e.attr + ": " + e.reason }

func missing(attr, want string) error {
	return &decodeError{attr, "missing, expected " + want}
}

func wrongType(attr string, got types.AttributeValue, want string) error {
	return &decodeError{attr, fmt.Sprintf("is %s, expected %s", typeName(got), want)}
}

// typeName names an attribute value's DynamoDB type for error messages.
func typeName(v types.AttributeValue) string {
	switch v.(type) {
	case *types.AttributeValueMemberS:
		return "a string (S)"
	case *types.AttributeValueMemberN:
		return "a number (N)"
	case *types.AttributeValueMemberB:
		return "binary (B)"
	case *types.AttributeValueMemberBOOL:
		return "a boolean (BOOL)"
	case *types.AttributeValueMemberNULL:
		return "null (NULL)"
	case *types.AttributeValueMemberSS:
		return "a string set (SS)"
	case *types.AttributeValueMemberNS:
		return "a number set (NS)"
	case *types.AttributeValueMemberBS:
		return "a binary set (BS)"
	case *types.AttributeValueMemberL:
		return "a list (L)"
	case *types.AttributeValueMemberM:
		return "a map (M)"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// reader decodes attributes of one item, remembering the first error so that decoders
// read as straight-line code and report the first bad attribute.
type reader struct {
	item map[string]types.AttributeValue
	err  error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// str reads a string attribute. Absent is an error when required, else "".
func (r *reader) str(attr string, required bool) string {
	v, ok := r.item[attr]
	if !ok {
		if required {
			r.fail(missing(attr, "a string (S)"))
		}
		return ""
	}
	s, ok := v.(*types.AttributeValueMemberS)
	if !ok {
		r.fail(wrongType(attr, v, "a string (S)"))
		return ""
	}
	return s.Value
}

// nonEmpty reads a required string attribute that must not be empty.
func (r *reader) nonEmpty(attr string) string {
	v := r.str(attr, true)
	if r.err == nil && v == "" {
		r.fail(&decodeError{attr, "is empty, expected a non-empty string"})
	}
	return v
}

// int64 reads an integer number attribute. Absent is an error when required, else 0.
func (r *reader) int64(attr string, required bool) int64 {
	v, ok := r.item[attr]
	if !ok {
		if required {
			r.fail(missing(attr, "an integer (N)"))
		}
		return 0
	}
	n, ok := v.(*types.AttributeValueMemberN)
	if !ok {
		r.fail(wrongType(attr, v, "an integer (N)"))
		return 0
	}
	i, err := strconv.ParseInt(n.Value, 10, 64)
	if err != nil {
		r.fail(&decodeError{attr, fmt.Sprintf("is %q, expected a 64-bit integer", n.Value)})
		return 0
	}
	return i
}

// int reads a required integer attribute that fits an int.
func (r *reader) int(attr string) int {
	i := r.int64(attr, true)
	if int64(int(i)) != i {
		r.fail(&decodeError{attr, fmt.Sprintf("is %d, out of range", i)})
	}
	return int(i)
}

// time reads a required RFC 3339 timestamp string.
func (r *reader) time(attr string) time.Time {
	s := r.str(attr, true)
	if r.err != nil {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		r.fail(&decodeError{attr, fmt.Sprintf("is %q, expected an RFC 3339 timestamp", s)})
	}
	return t
}

// strings reads a string set (SS) or a list of strings (L of S). Absent is nil.
func (r *reader) strings(attr string) []string {
	v, ok := r.item[attr]
	if !ok {
		return nil
	}
	const want = "a string set (SS) or a list of strings (L)"
	switch v := v.(type) {
	case *types.AttributeValueMemberSS:
		// A set has no order; sorting makes reads repeatable (shard ids sort in creation
		// order).
		out := slices.Clone(v.Value)
		slices.Sort(out)
		return out
	case *types.AttributeValueMemberL:
		out := make([]string, 0, len(v.Value))
		for i, e := range v.Value {
			s, ok := e.(*types.AttributeValueMemberS)
			if !ok {
				r.fail(&decodeError{attr, fmt.Sprintf("element %d is %s, expected a string (S)", i, typeName(e))})
				return nil
			}
			out = append(out, s.Value)
		}
		return out
	default:
		r.fail(wrongType(attr, v, want))
		return nil
	}
}

// hashKeyRange reads the KCL's hash key range: startingHashKey and endingHashKey, both
// or neither.
func (r *reader) hashKeyRange() (start, end string) {
	start, end = r.str(attrStartingHashKey, false), r.str(attrEndingHashKey, false)
	switch {
	case r.err != nil:
		return "", ""
	case start == "" && end != "":
		r.fail(&decodeError{attrStartingHashKey, "missing or empty while " + attrEndingHashKey + " is set, expected both or neither"})
	case start != "" && end == "":
		r.fail(&decodeError{attrEndingHashKey, "missing or empty while " + attrStartingHashKey + " is set, expected both or neither"})
	}
	return start, end
}

// checkVersion refuses items written in a newer format. Absent means version 1.
func (r *reader) checkVersion() {
	if _, ok := r.item[attrItemVersion]; !ok {
		return
	}
	v := r.int64(attrItemVersion, true)
	if r.err == nil && v > itemVersion {
		r.fail(&decodeError{attrItemVersion, fmt.Sprintf("written by a newer version (itemVersion %d)", v)})
	}
	if r.err == nil && v < 1 {
		r.fail(&decodeError{attrItemVersion, fmt.Sprintf("is %d, expected 1", v)})
	}
}

func strAV(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }

// deadWorkersAV is the dead workers as a map from worker id to its incarnation (absent
// for a worker without a record) and heartbeat.
func deadWorkersAV(ds []lease.DeadWorker) types.AttributeValue {
	m := make(map[string]types.AttributeValue, len(ds))
	for _, d := range ds {
		rec := map[string]types.AttributeValue{attrHeartbeat: numAV(d.Heartbeat)}
		if d.Incarnation != "" {
			rec[attrIncarnation] = strAV(d.Incarnation)
		}
		m[d.WorkerID] = &types.AttributeValueMemberM{Value: rec}
	}
	return &types.AttributeValueMemberM{Value: m}
}

// deadWorkers reads the dead workers written by deadWorkersAV, sorted by id. Absent is
// none.
func (r *reader) deadWorkers(attr string) []lease.DeadWorker {
	v, ok := r.item[attr]
	if !ok {
		return nil
	}
	m, ok := v.(*types.AttributeValueMemberM)
	if !ok {
		r.fail(wrongType(attr, v, "a map (M)"))
		return nil
	}
	var out []lease.DeadWorker
	for id, e := range m.Value {
		em, ok := e.(*types.AttributeValueMemberM)
		if !ok {
			r.fail(&decodeError{attr, fmt.Sprintf("entry %q is %s, expected a map (M)", id, typeName(e))})
			return nil
		}
		sub := reader{item: em.Value}
		d := lease.DeadWorker{WorkerID: id, Incarnation: sub.str(attrIncarnation, false), Heartbeat: sub.int64(attrHeartbeat, true)}
		if sub.err != nil {
			r.fail(&decodeError{attr, fmt.Sprintf("entry %q: %v", id, sub.err)})
			return nil
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b lease.DeadWorker) int { return strings.Compare(a.WorkerID, b.WorkerID) })
	return out
}

func numAV(v int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(v, 10)}
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// keyForReport names an item in a CorruptItem even when its key attribute is unusable.
func keyForReport(item map[string]types.AttributeValue, attr string) string {
	switch v := item[attr].(type) {
	case *types.AttributeValueMemberS:
		return v.Value
	case nil:
		return fmt.Sprintf("(item without %s)", attr)
	default:
		return fmt.Sprintf("(item with %s of type %s)", attr, typeName(v))
	}
}

// encodeLease returns the item of a lease.
func encodeLease(l lease.Lease) map[string]types.AttributeValue {
	item := map[string]types.AttributeValue{
		attrLeaseKey:     strAV(l.ShardID),
		attrLeaseCounter: numAV(l.Epoch),
		attrCheckpoint:   strAV(l.Checkpoint),
		attrItemVersion:  numAV(itemVersion),
	}
	// A free lease has no owner attribute, so that attribute_not_exists tests freedom.
	if l.Owner != "" {
		item[attrLeaseOwner] = strAV(l.Owner)
	}
	if !l.StartTimestamp.IsZero() {
		item[attrStartTimestamp] = numAV(l.StartTimestamp.UnixMilli())
	}
	if l.MillisBehindLatest > 0 {
		item[attrMillisBehind] = numAV(l.MillisBehindLatest)
	}
	// Absent means 0, for the KCL too; every checkpoint write sets it.
	if l.CheckpointSubSequence != 0 {
		item[attrCheckpointSub] = numAV(l.CheckpointSubSequence)
	}
	// The KCL writes it on every lease it creates and reads it back unconditionally: a
	// KCL worker that takes over a lease without it would fail its next prepared
	// checkpoint.
	item[attrOwnerSwitches] = numAV(0)
	if ss := stringSetAV(l.ParentShardIDs); ss != nil {
		item[attrParentShardID] = ss
	}
	if ss := stringSetAV(l.ChildShardIDs); ss != nil {
		item[attrChildShardIDs] = ss
	}
	if l.StartingHashKey != "" && l.EndingHashKey != "" {
		item[attrStartingHashKey] = strAV(l.StartingHashKey)
		item[attrEndingHashKey] = strAV(l.EndingHashKey)
	}
	return item
}

// stringSetAV returns ids as a string set, sorted and without duplicates (a string set
// must not hold any), or nil for none (a string set must not be empty either).
func stringSetAV(ids []string) types.AttributeValue {
	if len(ids) == 0 {
		return nil
	}
	set := slices.Clone(ids)
	slices.Sort(set)
	return &types.AttributeValueMemberSS{Value: slices.Compact(set)}
}

// decodeLease decodes a lease item; the error names the first bad attribute.
func decodeLease(item map[string]types.AttributeValue) (lease.Lease, error) {
	r := reader{item: item}
	r.checkVersion()
	var l lease.Lease
	l.ShardID = r.nonEmpty(attrLeaseKey)
	l.Owner = r.str(attrLeaseOwner, false)
	if _, ok := item[attrLeaseOwner]; ok && r.err == nil && l.Owner == "" {
		// Conditions test a free lease with attribute_not_exists; an empty owner would
		// make every take of this lease fail.
		r.fail(&decodeError{attrLeaseOwner, "is an empty string, expected a worker id or no attribute for a free lease"})
	}
	l.Epoch = r.int64(attrLeaseCounter, true)
	l.Checkpoint = r.nonEmpty(attrCheckpoint)
	if _, ok := item[attrCheckpointSub]; ok {
		l.CheckpointSubSequence = r.int64(attrCheckpointSub, true)
		if r.err == nil && l.CheckpointSubSequence < 0 {
			r.fail(&decodeError{attrCheckpointSub, "is negative, expected a sub-sequence number >= 0"})
		}
	}
	if _, ok := item[attrStartTimestamp]; ok {
		if ms := r.int64(attrStartTimestamp, true); r.err == nil {
			l.StartTimestamp = time.UnixMilli(ms).UTC()
		}
	}
	// The KCL's parentShardId wins; parentShardIds is read only from items written
	// before this code wrote the KCL's name (one item never has both from us).
	parents := attrParentShardID
	if _, ok := item[parents]; !ok {
		parents = attrLegacyParents
	}
	l.ParentShardIDs = r.strings(parents)
	l.ChildShardIDs = r.strings(attrChildShardIDs)
	if _, ok := item[attrMillisBehind]; ok {
		l.MillisBehindLatest = r.int64(attrMillisBehind, true)
	}
	l.StartingHashKey, l.EndingHashKey = r.hashKeyRange()
	if _, ok := item[attrStreamName]; ok && r.err == nil {
		r.fail(&decodeError{attrStreamName, "present: a KCL multi-stream lease (leaseKey account:stream:creationEpoch:shardId); " +
			"this consumer reads one stream and cannot use a multi-stream lease table"})
	}
	if r.err != nil {
		return lease.Lease{}, r.err
	}
	return l, nil
}

// encodeWorker returns the item of a worker record.
func encodeWorker(w lease.WorkerRecord) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		attrWorkerID:    strAV(w.WorkerID),
		attrIncarnation: strAV(w.Incarnation),
		attrHeartbeat:   numAV(w.Heartbeat),
		attrState:       strAV(string(w.State)),
		attrLeasesHeld:  numAV(int64(w.LeasesHeld)),
		attrLastSeen:    strAV(formatTime(w.LastSeen)),
		attrStartedAt:   strAV(formatTime(w.StartedAt)),
		attrItemVersion: numAV(itemVersion),
	}
}

// decodeWorker decodes a worker item.
func decodeWorker(item map[string]types.AttributeValue) (lease.WorkerRecord, error) {
	r := reader{item: item}
	r.checkVersion()
	var w lease.WorkerRecord
	w.WorkerID = r.nonEmpty(attrWorkerID)
	w.Incarnation = r.str(attrIncarnation, true)
	w.Heartbeat = r.int64(attrHeartbeat, true)
	w.State = lease.WorkerState(r.nonEmpty(attrState))
	w.LeasesHeld = r.int(attrLeasesHeld)
	w.LastSeen = r.time(attrLastSeen)
	w.StartedAt = r.time(attrStartedAt)
	if r.err != nil {
		return lease.WorkerRecord{}, r.err
	}
	return w, nil
}

// coordinatorValues are the number attributes UpdateCoordinator writes, paired with the
// record's values.
func coordinatorValues(c lease.CoordinatorRecord) []struct {
	attr string
	val  int64
} {
	return []struct {
		attr string
		val  int64
	}{
		{attrMaxLeases, int64(c.MaxLeasesPerWorker)},
		{attrTargetLeases, int64(c.TargetLeasesPerWorker)},
		{attrShardCount, int64(c.ShardCount)},
		{attrWorkerCount, int64(c.WorkerCount)},
		{attrLiveWorkers, int64(c.LiveWorkers)},
		{attrCap, int64(c.Cap)},
		{attrUnownedShards, int64(c.UnownedShards)},
		{attrRecommendedWorkers, int64(c.RecommendedWorkers)},
		{attrLeaseGeneration, c.LeaseGeneration},
	}
}

// CoordinatorItem returns the coordinator item this store writes for c, whole: for
// sizing it (the simulator prices reads and writes by item size).
func (s *Store) CoordinatorItem(c lease.CoordinatorRecord) map[string]types.AttributeValue {
	return encodeCoordinator(s.coordinatorKey, c)
}

// encodeCoordinator returns the coordinator item stored under key.
func encodeCoordinator(key string, c lease.CoordinatorRecord) map[string]types.AttributeValue {
	item := map[string]types.AttributeValue{
		attrWorkerID:    strAV(key),
		attrEpoch:       numAV(c.Epoch),
		attrVersion:     numAV(c.Version),
		attrUpdatedAt:   strAV(formatTime(c.UpdatedAt)),
		attrItemVersion: numAV(itemVersion),
	}
	// No coordinator is stored as no attribute (see ResignCoordinator).
	if c.CoordinatorID != "" {
		item[attrCoordinatorID] = strAV(c.CoordinatorID)
	}
	for _, v := range coordinatorValues(c) {
		item[v.attr] = numAV(v.val)
	}
	if c.WaitingParents != 0 {
		item[attrWaitingParents] = numAV(int64(c.WaitingParents))
	}
	if c.OwnedLeases != 0 {
		item[attrOwnedLeases] = numAV(int64(c.OwnedLeases))
	}
	if len(c.DeadWorkers) > 0 {
		item[attrDeadWorkers] = deadWorkersAV(c.DeadWorkers)
	}
	if len(c.RecheckWorkers) > 0 {
		item[attrRecheckWorkers] = &types.AttributeValueMemberSS{Value: c.RecheckWorkers}
	}
	if c.CoordinatorIncarnation != "" {
		item[attrCoordIncarnation] = strAV(c.CoordinatorIncarnation)
		item[attrCoordHeartbeat] = numAV(c.CoordinatorHeartbeat)
	}
	if c.InitialPosition != "" {
		item[attrInitialPosition] = strAV(c.InitialPosition)
		if !c.InitialTimestamp.IsZero() {
			item[attrInitialTimestamp] = strAV(formatTime(c.InitialTimestamp))
		}
	}
	return item
}

// decodeCoordinator decodes the coordinator item. An absent or empty coordinator_id means
// nobody holds the role.
func decodeCoordinator(item map[string]types.AttributeValue) (lease.CoordinatorRecord, error) {
	r := reader{item: item}
	r.checkVersion()
	var c lease.CoordinatorRecord
	c.CoordinatorID = r.str(attrCoordinatorID, false)
	c.Epoch = r.int64(attrEpoch, true)
	c.Version = r.int64(attrVersion, true)
	// The policy values are only advice that the coordinator recomputes on its next
	// pass. A value that is there but unusable (edited by hand: a string, a negative
	// number, a maximum above the cap) makes all of them unknown, as before the first
	// pass: workers keep the values they last obeyed and the coordinator writes correct
	// ones. Rejecting the item instead would leave the application without a coordinator
	// (the item could never be claimed again). A missing attribute is still an error.
	valid := true
	policy := func(attr string) int {
		v, ok := item[attr]
		if !ok {
			r.fail(missing(attr, "an integer (N)"))
			return 0
		}
		n, ok := v.(*types.AttributeValueMemberN)
		if !ok {
			valid = false
			return 0
		}
		i, err := strconv.ParseInt(n.Value, 10, 32)
		if err != nil || i < 0 {
			valid = false
			return 0
		}
		return int(i)
	}
	c.MaxLeasesPerWorker = policy(attrMaxLeases)
	c.TargetLeasesPerWorker = policy(attrTargetLeases)
	c.ShardCount = policy(attrShardCount)
	c.WorkerCount = policy(attrWorkerCount)
	c.LiveWorkers = policy(attrLiveWorkers)
	c.Cap = policy(attrCap)
	c.UnownedShards = policy(attrUnownedShards)
	c.RecommendedWorkers = policy(attrRecommendedWorkers)
	c.LeaseGeneration = r.int64(attrLeaseGeneration, true)
	// The membership view: absent in items written before it existed.
	c.OwnedLeases = int(max(0, r.int64(attrOwnedLeases, false)))
	c.WaitingParents = int(max(0, r.int64(attrWaitingParents, false)))
	c.DeadWorkers = r.deadWorkers(attrDeadWorkers)
	c.RecheckWorkers = r.strings(attrRecheckWorkers)
	c.CoordinatorIncarnation = r.str(attrCoordIncarnation, false)
	c.CoordinatorHeartbeat = r.int64(attrCoordHeartbeat, false)
	c.UpdatedAt = r.time(attrUpdatedAt)
	if c.InitialPosition = r.str(attrInitialPosition, false); c.InitialPosition != "" {
		switch c.InitialPosition {
		case lease.TrimHorizon:
		case lease.AtTimestamp:
			c.InitialTimestamp = r.time(attrInitialTimestamp)
		default:
			r.fail(&decodeError{attrInitialPosition, fmt.Sprintf("is %q, expected %s or %s", c.InitialPosition, lease.TrimHorizon, lease.AtTimestamp)})
		}
	}
	if r.err != nil {
		return lease.CoordinatorRecord{}, r.err
	}
	if c.MaxLeasesPerWorker > c.Cap || c.TargetLeasesPerWorker > c.Cap || c.UnownedShards > c.ShardCount {
		valid = false
	}
	if !valid {
		c.MaxLeasesPerWorker, c.TargetLeasesPerWorker, c.ShardCount, c.WorkerCount = 0, 0, 0, 0
		c.LiveWorkers, c.Cap, c.UnownedShards, c.RecommendedWorkers = 0, 0, 0, 0
	}
	return c, nil
}

// exprBuilder collects expression attribute names and values under generated
// placeholders, so that no attribute name can collide with a reserved word.
type exprBuilder struct {
	names  map[string]string
	values map[string]types.AttributeValue
	byName map[string]string
}

func newExpr() *exprBuilder {
	return &exprBuilder{
		names:  map[string]string{},
		values: map[string]types.AttributeValue{},
		byName: map[string]string{},
	}
}

// name returns the placeholder of attribute attr.
func (e *exprBuilder) name(attr string) string {
	if p, ok := e.byName[attr]; ok {
		return p
	}
	p := "#n" + strconv.Itoa(len(e.names))
	e.names[p] = attr
	e.byName[attr] = p
	return p
}

// nameList returns the placeholders of attrs, comma-separated (a REMOVE clause's list).
func (e *exprBuilder) nameList(attrs ...string) string {
	ps := make([]string, len(attrs))
	for i, a := range attrs {
		ps[i] = e.name(a)
	}
	return strings.Join(ps, ", ")
}

// value returns a new placeholder for v.
func (e *exprBuilder) value(v types.AttributeValue) string {
	p := ":v" + strconv.Itoa(len(e.values))
	e.values[p] = v
	return p
}

func (e *exprBuilder) attrNames() map[string]string {
	if len(e.names) == 0 {
		return nil
	}
	return e.names
}

func (e *exprBuilder) attrValues() map[string]types.AttributeValue {
	if len(e.values) == 0 {
		return nil
	}
	return e.values
}
