package harness

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
)

// Module is the product's module path, for building its binaries.
const Module = "github.com/kds-lease-manager/kds-lease-manager"

// BuildBinaries builds kds-consumer and kdsctl into dir (from the module the current
// directory is in) and returns their paths.
func BuildBinaries(ctx context.Context, dir string) (workerBin, ctlBin string, err error) {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator),
		Module+"/cmd/kds-consumer", Module+"/cmd/kdsctl")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return filepath.Join(dir, "kds-consumer"), filepath.Join(dir, "kdsctl"), nil
}
