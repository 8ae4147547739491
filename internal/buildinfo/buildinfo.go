// Package buildinfo says which build of the binaries runs: the module version and the
// version-control revision the Go tool chain stamps into a binary built from a checkout,
// read back with runtime/debug, or those the build passed with -ldflags -X (make build
// and the Dockerfile do: a checkout may be built with -buildvcs=false, and a container
// build has no .git).
package buildinfo

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// Set at link time: -ldflags "-X <this package>.stampedVersion=... -X ....stampedRevision=..."
// (see the Makefile's LDFLAGS). Written by the linker only, never at run time.
var stampedVersion, stampedRevision string

// Info describes one build.
type Info struct {
	// Version is the main module's version: a tag, a pseudo-version from the checkout
	// ("+dirty" when it had local changes), or "(devel)".
	Version string
	// Revision and Time are the commit built, when the tool chain recorded it.
	Revision, Time string
	// Modified is set when the checkout had uncommitted changes.
	Modified bool
	// GoVersion is the tool chain that built the binary.
	GoVersion string
}

// Read returns the running binary's build information. Fields the binary does not carry
// (a test binary has no revision) are "unknown".
func Read() Info {
	info := fromToolChain()
	if stampedVersion != "" {
		info.Version = stampedVersion
	}
	if stampedRevision != "" {
		info.Revision = stampedRevision
	}
	return info
}

func fromToolChain() Info {
	info := Info{Version: "unknown", Revision: "unknown", Time: "unknown", GoVersion: "unknown"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	info.GoVersion = bi.GoVersion
	if bi.Main.Version != "" {
		info.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// ShortRevision is the revision's first 12 characters.
func (i Info) ShortRevision() string {
	if len(i.Revision) > 12 {
		return i.Revision[:12]
	}
	return i.Revision
}

// String is the line `NAME version` prints after the binary's name.
func (i Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (revision %s", i.Version, i.ShortRevision())
	if i.Modified {
		b.WriteString(", modified")
	}
	fmt.Fprintf(&b, ", committed %s, built with %s)", i.Time, i.GoVersion)
	return b.String()
}
