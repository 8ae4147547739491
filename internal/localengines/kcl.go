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

// kclRecorderScript is a record processor written the way aws-kcl's README shows
// (kcl(recordProcessor).run()) that appends every record to a record log (package
// recordlog's format) before it checkpoints the batch.
//
//go:embed kcl_recorder.js
var kclRecorderScript []byte

// KCLDir is where InstallKCL installs aws-kcl under the engine dir.
func KCLDir(engineDir string) string { return filepath.Join(engineDir, "kcl-nodejs") }

// InstallKCL installs aws-kcl with npm into KCLDir(engineDir) unless it is already there,
// like Install does for the engines, writes the recording record processor next to it,
// and returns the processor's path: run it with node.
func InstallKCL(ctx context.Context, engineDir string) (string, error) {
	dir := KCLDir(engineDir)
	err := npmInstall(ctx, dir, "kds-lease-manager-kcl-nodejs", "The KCL for Node.js (MultiLang record processors) for kds-lease-manager tests",
		map[string]string{"aws-kcl": KCLVersion},
		func(d string) bool { return hasModule(d, "aws-kcl", "index.js", KCLVersion) })
	if err != nil {
		return "", err
	}
	return writeScript(dir, "kcl_recorder.js", kclRecorderScript)
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
