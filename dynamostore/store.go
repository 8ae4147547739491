// Package dynamostore keeps the lease table and the metadata table in DynamoDB. It
// implements consumer.LeaseStore and consumer.MetaStore.
//
// Layout. The lease table is named after the application, as in the KCL, with hash key
// leaseKey (S). The metadata table is "<app>_meta" with hash key worker_id (S); it holds one
// item per worker and the coordinator item, whose worker_id is "<app>_coordinator".
//
// Every item carries itemVersion (N, currently 1) so that a later, incompatible format can
// be recognised: an item with a higher itemVersion is reported as corrupt instead of being
// misread. Items without itemVersion are read as version 1, so tables written by other
// tools with the same attribute names stay readable.
//
// Reads are strongly consistent: lease and coordinator decisions must not act on stale data.
package dynamostore

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/smithy-go"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// Errors returned in addition to those of package lease (lease.ErrConflict,
// lease.ErrNotFound, lease.ErrExists). The service's original error stays in the chain.
var (
	// ErrTableNotFound means the lease or metadata table does not exist (or is not ACTIVE
	// yet). The message names the table.
	ErrTableNotFound = lease.ErrTableNotFound
	// ErrAdoptedTableMissing comes with ErrTableNotFound when the missing table is the
	// lease table to adopt (WithLeaseTable): a wrong setting, since it is never created.
	ErrAdoptedTableMissing = errors.New("it is the lease table to adopt, which is never created: name an existing lease table, " +
		"such as a KCL application's (the KCL names it after the application), in this account and region")
	// ErrAccessDenied means the credentials may not perform the call.
	ErrAccessDenied = errors.New("access to dynamodb denied")
	// ErrThrottled means DynamoDB kept throttling the request after the SDK's retries.
	ErrThrottled = errors.New("dynamodb throttled the request")
	// ErrCorrupt means a single item read by key could not be decoded. Table-wide reads
	// report such items in their Corrupt lists instead.
	ErrCorrupt = errors.New("stored item cannot be decoded")
)

// DynamoDB is the part of the DynamoDB API the store uses. *dynamodb.Client satisfies it.
type DynamoDB interface {
	CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	DeleteTable(ctx context.Context, in *dynamodb.DeleteTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DeleteTableOutput, error)
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	Scan(ctx context.Context, in *dynamodb.ScanInput, optFns ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
}

var _ DynamoDB = (*dynamodb.Client)(nil)

// Store keeps the lease and metadata tables of one application. It is safe for concurrent
// use.
type Store struct {
	client     DynamoDB
	leaseTable string
	// adopted: the lease table was named with WithLeaseTable; it must exist and is never
	// created.
	adopted        bool
	metaTable      string
	coordinatorKey string
	clock          clock.Clock
	pollInterval   time.Duration
}

// Option configures a Store.
type Option func(*Store)

// WithClock sets the clock used for updated_at and for waiting on table creation.
func WithClock(c clock.Clock) Option { return func(s *Store) { s.clock = c } }

// WithPollInterval sets how often EnsureTables checks whether a table became ACTIVE
// (default one second).
func WithPollInterval(d time.Duration) Option { return func(s *Store) { s.pollInterval = d } }

// WithLeaseTable makes the store use the existing lease table table (a KCL
// application's, say) instead of the one named after the application. EnsureTables does
// not create it: it must exist with the hash key leaseKey (S). The metadata table is
// still named after the application.
func WithLeaseTable(table string) Option {
	return func(s *Store) { s.leaseTable, s.adopted = table, true }
}

// DynamoDB table names: 3 to 255 characters of this set.
var tableNameRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]{3,255}$`)

// ValidTableName reports whether name is a valid DynamoDB table name: 3 to 255 letters,
// digits, '_', '-' and '.'.
func ValidTableName(name string) bool { return tableNameRE.MatchString(name) }

const metaSuffix = "_meta"

// New returns a store for application app: lease table app (or the one WithLeaseTable
// names), metadata table app+"_meta".
func New(client DynamoDB, app string, opts ...Option) (*Store, error) {
	if client == nil {
		return nil, errors.New("dynamostore: nil DynamoDB client")
	}
	// The meta table name is the longest; checking it checks app too.
	if !tableNameRE.MatchString(app) || !tableNameRE.MatchString(app+metaSuffix) {
		return nil, fmt.Errorf("dynamostore: application name %q is not a valid DynamoDB table name (3-%d characters of a-z A-Z 0-9 _ . -)", app, 255-len(metaSuffix))
	}
	s := &Store{
		client:         client,
		leaseTable:     app,
		metaTable:      app + metaSuffix,
		coordinatorKey: app + "_coordinator",
		clock:          clock.Real{},
		pollInterval:   time.Second,
	}
	for _, o := range opts {
		o(s)
	}
	if s.pollInterval <= 0 {
		s.pollInterval = time.Second
	}
	if s.adopted && !tableNameRE.MatchString(s.leaseTable) {
		return nil, fmt.Errorf("dynamostore: lease table name %q is not a valid DynamoDB table name (3-255 characters of a-z A-Z 0-9 _ . -)", s.leaseTable)
	}
	if s.leaseTable == s.metaTable {
		return nil, fmt.Errorf("dynamostore: lease table %q is the application's metadata table; name another table", s.leaseTable)
	}
	return s, nil
}

// LeaseTable returns the lease table's name.
func (s *Store) LeaseTable() string { return s.leaseTable }

// MetaTable returns the metadata table's name.
func (s *Store) MetaTable() string { return s.metaTable }

// CoordinatorKey returns the worker_id of the coordinator item in the metadata table.
func (s *Store) CoordinatorKey() string { return s.coordinatorKey }

// Error codes the service uses for throttling; the SDK has already retried these.
var throttleCodes = map[string]bool{
	"ProvisionedThroughputExceededException": true,
	"ThrottlingException":                    true,
	"RequestLimitExceeded":                   true,
	"LimitExceededException":                 true,
}

// wrapErr maps a service error to the package's sentinels, keeping the original error in
// the chain, and names the operation and table.
func wrapErr(op, table string, err error) error {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code := apiErr.ErrorCode()
		switch {
		case code == "ResourceNotFoundException":
			return fmt.Errorf("dynamostore: %s: table %q: %w: %w", op, table, ErrTableNotFound, err)
		case code == "AccessDeniedException":
			return fmt.Errorf("dynamostore: %s: table %q: %w: %w", op, table, ErrAccessDenied, err)
		case throttleCodes[code]:
			return fmt.Errorf("dynamostore: %s: table %q: %w: %w", op, table, ErrThrottled, err)
		}
	}
	return fmt.Errorf("dynamostore: %s: table %q: %w", op, table, err)
}

func errorCode(err error) string {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode()
	}
	return ""
}
