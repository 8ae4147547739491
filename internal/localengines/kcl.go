package localengines

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
)

// KCLVersion is the pinned version of the npm package aws-kcl, the KCL for Node.js: the
// record processor side of the KCL MultiLang protocol (lib/kcl), which the tests run
// under kds-consumer's MultiLang mode.
const KCLVersion = "2.3.2"

// InstallKCL installs aws-kcl with npm into kcl-nodejs under the engine dir unless it is
// already there, like Install does for the engines, writes the recording record processor
// kcl_recorder.js next to it, and returns the processor's path: run it with node. The
// processor, written the way aws-kcl's README shows (kcl(recordProcessor).run()), appends
// every record to a record log (package recordlog's format) before it checkpoints the
// batch.
func InstallKCL(ctx context.Context, engineDir string) (string, error) {
	dir := filepath.Join(engineDir, "kcl-nodejs")
	if err := installModule(ctx, dir, "kcl-nodejs", "The KCL for Node.js (MultiLang record processors)", "aws-kcl", KCLVersion); err != nil {
		return "", err
	}
	return writeScript(dir, "kcl_recorder.js", kclRecorderScript)
}

//go:embed kcl_recorder.js
var kclRecorderScript []byte

// installModule installs the npm package module (its entry point index.js) at version
// into dir with npmInstall, as the package kds-lease-manager-<name>.
func installModule(ctx context.Context, dir, name, description, module, version string) error {
	return npmInstall(ctx, dir, "kds-lease-manager-"+name, description+" for kds-lease-manager tests", map[string]string{module: version},
		func(d string) bool { return hasModule(d, module, "index.js", version) })
}

// writeScript writes content to dir/name unless it is there already and returns the
// path.
func writeScript(dir, name string, content []byte) (string, error) {
	path := filepath.Join(dir, name)
	if b, err := os.ReadFile(path); err == nil && bytes.Equal(b, content) {
		return path, nil
	}
	if err := os.WriteFile(path, content, 0o644); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, nil
}
