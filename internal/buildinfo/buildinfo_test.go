package buildinfo

import (
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	for name, tc := range map[string]struct {
		info Info
		want string
	}{
		"a tagged build": {Info{Version: "v1.2.0", Revision: "0123456789abcdef0123", Time: "2026-12-01T10:00:00Z", GoVersion: "go1.26.0"},
			"v1.2.0 (revision 0123456789ab, committed 2026-12-01T10:00:00Z, built with go1.26.0)"},
		"a checkout with local changes": {Info{Version: "v0.0.0-20261201100000-0123456789ab+dirty", Revision: "0123456789abcdef0123", Modified: true, Time: "t", GoVersion: "go1.26.0"},
			"v0.0.0-20261201100000-0123456789ab+dirty (revision 0123456789ab, modified, committed t, built with go1.26.0)"},
		"nothing recorded": {Info{Version: "unknown", Revision: "unknown", Time: "unknown", GoVersion: "unknown"},
			"unknown (revision unknown, committed unknown, built with unknown)"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := tc.info.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}

// A test binary carries the tool chain's version at least.
func TestReadNamesTheToolChain(t *testing.T) {
	if got := Read().GoVersion; !strings.HasPrefix(got, "go1.") {
		t.Errorf("GoVersion = %q, want go1.x", got)
	}
}
