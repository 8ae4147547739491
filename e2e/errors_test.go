package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
)

// TestCorruptLeaseItemsAreSkipped proves that malformed items in the lease table (a
// missing leaseCounter, a leaseCounter stored as a string, a leaseOwner stored as a
// number, an itemVersion from a future format) do not stop the workers: both stay up,
// each corrupt item is reported in an error log line naming its key, and every real
// shard is processed.
func TestCorruptLeaseItemsAreSkipped(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 6, defaultLeaseDuration)
	corrupt := map[string]map[string]dtypes.AttributeValue{
		"corrupt-missing-counter":  {"leaseOwner": avS("ghost"), "checkpoint": avS("TRIM_HORIZON")},
		"corrupt-counter-string":   {"leaseCounter": avS("7"), "checkpoint": avS("TRIM_HORIZON")},
		"corrupt-owner-number":     {"leaseOwner": avN("42"), "leaseCounter": avN("3"), "checkpoint": avS("TRIM_HORIZON")},
		"corrupt-future-version99": {"itemVersion": avN("99"), "leaseCounter": avN("0"), "checkpoint": avS("TRIM_HORIZON")},
	}
	putRawItems(t, c, c.store.LeaseTable(), "leaseKey", corrupt)
	p := newProducer(t, c)
	p.putRound(3)

	ws, _ := c.startWorkers("w1", "w2")
	waitFor(t, 60*time.Second, "a processed record from every one of the 6 shards", func() (bool, string) {
		recs, err := c.records()
		if err != nil {
			return false, err.Error()
		}
		first := firstPerShard(recs, nil)
		return len(first) == 6, fmt.Sprintf("%d of 6 shards processed", len(first))
	})
	c.waitDelivered(30*time.Second, p.Sent())
	c.waitBalanced(30*time.Second, 6, 3, ids(ws)...)

	for _, w := range ws {
		if w.Exited() {
			t.Errorf("worker %s exited: %s", w.ID, w.State())
		}
		reported := map[string]bool{}
		for _, e := range logEntries(w.LogPath()) {
			if e.Level != "ERROR" {
				continue
			}
			for key := range corrupt {
				if strings.Contains(fmt.Sprint(e.Attrs), key) {
					reported[key] = true
				}
			}
		}
		// Every worker read the lease table to take its leases.
		for key := range corrupt {
			if !reported[key] {
				t.Errorf("worker %s logged no error naming corrupt item %s", w.ID, key)
			}
		}
	}
}

// TestStartupErrorsAreClear proves that the usual deployment mistakes stop the worker
// at once with a message that says what is wrong: a stream that does not exist, missing
// tables with table creation turned off, and invalid settings (exit status 2, naming
// the variable).
func TestStartupErrorsAreClear(t *testing.T) {
	t.Parallel()
	t.Run("missing stream", func(t *testing.T) {
		c := newCluster(t, 0, defaultLeaseDuration) // names a stream that is never created
		stderr, took := c.runFailing(30 * time.Second)
		if took > 15*time.Second {
			t.Errorf("took %s to give up, want seconds", took)
		}
		if !strings.Contains(stderr, c.stream) || !strings.Contains(stderr, "not found") {
			t.Errorf("stderr does not name stream %s as not found:\n%s", c.stream, stderr)
		}
	})
	t.Run("missing tables", func(t *testing.T) {
		c := newCluster(t, 1, defaultLeaseDuration)
		stderr, took := c.runFailing(30*time.Second, "CREATE_TABLES=false")
		if took > 15*time.Second {
			t.Errorf("took %s to give up, want seconds", took)
		}
		named := strings.Contains(stderr, `"`+c.store.LeaseTable()+`"`) || strings.Contains(stderr, `"`+c.store.MetaTable()+`"`)
		if !named || !strings.Contains(stderr, "not found") {
			t.Errorf("stderr does not name the missing table %s or %s as not found:\n%s", c.store.LeaseTable(), c.store.MetaTable(), stderr)
		}
	})
	for _, tc := range []struct{ env, value string }{
		{"LEASE_DURATION", "abc"},
		{"MAX_LEASES_CAP", "0"},
		{"INITIAL_POSITION", "EARLIEST"},
	} {
		t.Run("invalid "+tc.env, func(t *testing.T) {
			c := newCluster(t, 0, defaultLeaseDuration)
			w, _ := c.runWorker("w1", 10*time.Second, tc.env+"="+tc.value)
			stderr := w.Output()
			if w.ExitCode() != 2 {
				t.Errorf("%s=%s: exit %s, want status 2", tc.env, tc.value, w.State())
			}
			if !strings.Contains(stderr, tc.env) {
				t.Errorf("%s=%s: stderr does not name %s:\n%s", tc.env, tc.value, tc.env, stderr)
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// avS and avN are DynamoDB string and number values.
func avS(v string) dtypes.AttributeValue { return &dtypes.AttributeValueMemberS{Value: v} }
func avN(v string) dtypes.AttributeValue { return &dtypes.AttributeValueMemberN{Value: v} }

// putRawItems creates c's tables and writes items into table as they are, past the
// store's checks and encoding, each under its key in attribute keyAttr.
func putRawItems(t *testing.T, c *cluster, table, keyAttr string, items map[string]map[string]dtypes.AttributeValue) {
	t.Helper()
	if err := c.store.EnsureTables(t.Context()); err != nil {
		t.Fatal(err)
	}
	ddb := enginetest.DynamoDB(t)
	for key, item := range items {
		item[keyAttr] = avS(key)
		if _, err := ddb.PutItem(t.Context(), &dynamodb.PutItemInput{TableName: aws.String(table), Item: item}); err != nil {
			t.Fatalf("put item %s: %v", key, err)
		}
	}
}
