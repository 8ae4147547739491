package multilang

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// The actions of the KCL MultiLang protocol: one JSON object per line, its kind in
// "action".
const (
	actionInitialize        = "initialize"
	actionProcessRecords    = "processRecords"
	actionLeaseLost         = "leaseLost"
	actionShardEnded        = "shardEnded"
	actionShutdownRequested = "shutdownRequested"
	actionCheckpoint        = "checkpoint"
	actionStatus            = "status"
	actionRecord            = "record"
)

// The errors a checkpoint answer names, as the KCL's MultiLangDaemon names them: the
// simple class name of the exception its checkpointer threw.
const (
	// ErrorShutdown: the lease was lost; the processor must not checkpoint again (the
	// KCL's ShutdownException).
	ErrorShutdown = "ShutdownException"
	// ErrorInvalidState: no checkpoint is possible in this action (initialize,
	// leaseLost), as the KCL answers.
	ErrorInvalidState = "InvalidStateException"
	// ErrorIllegalArgument: not a sequence number of this shard, or before the last
	// checkpoint.
	ErrorIllegalArgument = "IllegalArgumentException"
	// ErrorDependency: the lease table could not be written; the checkpoint may be
	// retried.
	ErrorDependency = "KinesisClientLibDependencyException"
)

// initializeMsg starts a processor on a shard at its checkpoint.
type initializeMsg struct {
	Action            string `json:"action"`
	ShardID           string `json:"shardId"`
	SequenceNumber    string `json:"sequenceNumber,omitempty"`
	SubSequenceNumber int64  `json:"subSequenceNumber"`
}

// recordMsg is one record of a processRecords action. Data is base64 (encoding/json's
// []byte); the arrival time is in Unix milliseconds.
type recordMsg struct {
	Action                      string `json:"action"`
	Data                        []byte `json:"data"`
	PartitionKey                string `json:"partitionKey"`
	SequenceNumber              string `json:"sequenceNumber"`
	SubSequenceNumber           int64  `json:"subSequenceNumber"`
	ApproximateArrivalTimestamp *int64 `json:"approximateArrivalTimestamp,omitempty"`
}

type processRecordsMsg struct {
	Action             string      `json:"action"`
	Records            []recordMsg `json:"records"`
	MillisBehindLatest int64       `json:"millisBehindLatest"`
}

// actionMsg is an action without fields: leaseLost, shardEnded, shutdownRequested.
type actionMsg struct {
	Action string `json:"action"`
}

// checkpointReply answers a child's checkpoint request: Error is empty on success.
type checkpointReply struct {
	Action            string  `json:"action"`
	SequenceNumber    *string `json:"sequenceNumber"`
	SubSequenceNumber *int64  `json:"subSequenceNumber,omitempty"`
	Error             string  `json:"error,omitempty"`
}

// childMsg is a line from the child: a status for the action it finished, or a
// checkpoint request (a sequence number, or none for "everything delivered so far").
type childMsg struct {
	Action            string  `json:"action"`
	ResponseFor       string  `json:"responseFor"`
	SequenceNumber    *string `json:"sequenceNumber"`
	SubSequenceNumber *int64  `json:"subSequenceNumber"`
}

// errProtocol is wrapped by errors for lines that break the protocol.
var errProtocol = errors.New("MultiLang protocol violation")

// parseChildLine parses one non-empty line from the child's standard output.
func parseChildLine(line []byte) (childMsg, error) {
	var m childMsg
	if err := json.Unmarshal(line, &m); err != nil {
		return m, fmt.Errorf("%w: a line on standard output is not a MultiLang message (log to standard error, not standard output): %q: %w",
			errProtocol, quoteCut(line), err)
	}
	switch m.Action {
	case actionStatus, actionCheckpoint:
		return m, nil
	case "":
		return m, fmt.Errorf("%w: a message without an action: %q", errProtocol, quoteCut(line))
	}
	return m, fmt.Errorf("%w: unexpected action %q from the child: %q", errProtocol, m.Action, quoteCut(line))
}

// quoteCut returns line cut to 200 bytes for messages.
func quoteCut(line []byte) string {
	const most = 200
	if len(line) > most {
		return string(line[:most]) + "..."
	}
	return string(line)
}

func newProcessRecords(in consumer.ProcessRecordsInput) processRecordsMsg {
	m := processRecordsMsg{Action: actionProcessRecords, Records: make([]recordMsg, len(in.Records)), MillisBehindLatest: in.MillisBehindLatest}
	for i, r := range in.Records {
		m.Records[i] = newRecord(r)
	}
	return m
}

func newRecord(r stream.Record) recordMsg {
	m := recordMsg{Action: actionRecord, Data: r.Data, PartitionKey: r.PartitionKey, SequenceNumber: r.SequenceNumber, SubSequenceNumber: r.SubSequenceNumber}
	if m.Data == nil {
		m.Data = []byte{}
	}
	if !r.ApproximateArrivalTimestamp.IsZero() {
		ms := r.ApproximateArrivalTimestamp.UnixMilli()
		m.ApproximateArrivalTimestamp = &ms
	}
	return m
}

// checkpointError names err as the KCL's MultiLangDaemon does (errors from
// consumer.Checkpointer).
func checkpointError(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, consumer.ErrLeaseLost):
		return ErrorShutdown
	case errors.Is(err, consumer.ErrCheckpointBackwards), errors.Is(err, consumer.ErrInvalidSequenceNumber), errors.Is(err, errNotDelivered):
		return ErrorIllegalArgument
	}
	return ErrorDependency
}
