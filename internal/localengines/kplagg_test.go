package localengines_test

import (
	"fmt"
	"testing"

	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
	"github.com/kds-lease-manager/kds-lease-manager/kpl"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// Records aggregated by the npm package aws-kinesis-agg split back into the same user
// records, partition keys, explicit hash keys and order.
func TestAggregatedByNodeDeaggregate(t *testing.T) {
	dir, err := localengines.InstallKPLAgg(t.Context(), localengines.DefaultDir())
	if err != nil {
		t.Fatal(err)
	}
	groups := [][]kpl.UserRecord{{}, {}}
	for i := range 50 {
		u := kpl.UserRecord{PartitionKey: fmt.Sprintf("pk-%d", i%7), Data: []byte(fmt.Sprintf("record %d \x00\xff", i))}
		if i%3 == 0 {
			u.ExplicitHashKey = fmt.Sprint(uint64(i) * 1e15)
		}
		groups[i%2] = append(groups[i%2], u)
	}
	got, err := localengines.AggregateWithNode(t.Context(), dir, groups)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d Kinesis records, want 2", len(got))
	}
	for i, a := range got {
		if a.Group != i || a.PartitionKey != groups[i][0].PartitionKey {
			t.Errorf("record %d: group %d, partition key %q", i, a.Group, a.PartitionKey)
		}
		users, err := kpl.Deaggregate(stream.Record{SequenceNumber: "1", Data: a.Data})
		if err != nil {
			t.Fatal(err)
		}
		if len(users) != len(groups[i]) {
			t.Fatalf("group %d: %d user records, want %d", i, len(users), len(groups[i]))
		}
		for j, u := range users {
			w := groups[i][j]
			if u.PartitionKey != w.PartitionKey || u.ExplicitHashKey != w.ExplicitHashKey || string(u.Data) != string(w.Data) || u.SubSequenceNumber != int64(j) {
				t.Errorf("group %d user record %d = %+v, want %+v", i, j, u, w)
			}
		}
	}
}
