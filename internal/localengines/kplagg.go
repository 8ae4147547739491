package localengines

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"

	"github.com/kds-lease-manager/kds-lease-manager/kpl"
)

// KPLAggVersion is the pinned version of the npm package aws-kinesis-agg, the KPL
// aggregated record format library for Node.js that the tests aggregate records with.
const KPLAggVersion = "4.2.8"

//go:embed kplagg.js
var kplAggScript []byte

// KPLAggDir is where InstallKPLAgg installs aws-kinesis-agg under the engine dir.
func KPLAggDir(engineDir string) string { return filepath.Join(engineDir, "kpl-agg") }

// InstallKPLAgg installs aws-kinesis-agg with npm into KPLAggDir(engineDir) unless it is
// already there, like Install does for the engines, and returns that directory.
func InstallKPLAgg(ctx context.Context, engineDir string) (string, error) {
	dir := KPLAggDir(engineDir)
	return dir, installModule(ctx, dir, "kpl-agg", "The KPL aggregated record format", "aws-kinesis-agg", KPLAggVersion)
}

// Aggregated is one Kinesis record aws-kinesis-agg produced: put it with its partition key
// (and explicit hash key, if any).
type Aggregated struct {
	// Group is the index of the user record group it aggregates (a group larger than a
	// Kinesis record gives several).
	Group           int    `json:"group"`
	PartitionKey    string `json:"partitionKey"`
	ExplicitHashKey string `json:"explicitHashKey,omitempty"`
	Data            []byte `json:"data"`
}

// AggregateWithNode aggregates each group of user records into one Kinesis record with
// aws-kinesis-agg's aggregate API, run by node from the installation in dir
// (InstallKPLAgg).
func AggregateWithNode(ctx context.Context, dir string, groups [][]kpl.UserRecord) ([]Aggregated, error) {
	script, err := writeScript(dir, "kplagg.js", kplAggScript)
	if err != nil {
		return nil, err
	}
	type userJSON struct {
		PartitionKey    string `json:"partitionKey"`
		ExplicitHashKey string `json:"explicitHashKey,omitempty"`
		Data            []byte `json:"data"`
	}
	var in bytes.Buffer
	enc := json.NewEncoder(&in)
	for _, g := range groups {
		us := make([]userJSON, len(g))
		for i, u := range g {
			us[i] = userJSON{u.PartitionKey, u.ExplicitHashKey, u.Data}
		}
		if err := enc.Encode(us); err != nil {
			return nil, err
		}
	}
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Dir = dir
	cmd.Stdin = &in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("node %s: %w\n%s", script, err, tail(stderr.Bytes(), 4096))
	}
	var recs []Aggregated
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 1<<20), 4<<20)
	for sc.Scan() {
		var a Aggregated
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			return nil, fmt.Errorf("node %s: bad output line %q: %w", script, tail(sc.Bytes(), 200), err)
		}
		recs = append(recs, a)
	}
	return recs, sc.Err()
}
