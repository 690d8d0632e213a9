package version

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestFromBuildInfo(t *testing.T) {
	rev := "0123456789abcdef0123456789abcdef01234567"
	vcs := []debug.BuildSetting{
		{Key: "vcs.revision", Value: rev},
		{Key: "vcs.time", Value: "2025-01-02T03:04:05Z"},
		{Key: "vcs.modified", Value: "true"},
	}
	for _, tc := range []struct {
		name     string
		main     string
		settings []debug.BuildSetting
		want     string
		str      string
	}{
		{"tagged", "v1.2.0", nil, "v1.2.0", "v1.2.0 (go1.26.8)"},
		{"stamped from a work tree", "v0.0.0-20250102030405-0123456789ab+dirty", vcs,
			"v0.0.0-20250102030405-0123456789ab+dirty", "v0.0.0-20250102030405-0123456789ab+dirty (revision 0123456789ab, 2025-01-02T03:04:05Z, modified; go1.26.8)"},
		{"revision only", "(devel)", vcs, "devel-0123456789ab+dirty", "devel-0123456789ab+dirty (revision 0123456789ab, 2025-01-02T03:04:05Z, modified; go1.26.8)"},
		{"nothing", "(devel)", nil, Unknown, Unknown + " (go1.26.8)"},
		{"empty main version", "", nil, Unknown, Unknown + " (go1.26.8)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: tc.main}, Settings: tc.settings}
			got := fromBuildInfo(bi)
			if got.Version != tc.want || got.String() != tc.str {
				t.Errorf("version %q, string %q; want %q, %q", got.Version, got.String(), tc.want, tc.str)
			}
			if tc.settings != nil && (got.Revision != rev || !got.Modified || !got.Time.Equal(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))) {
				t.Errorf("vcs fields: %+v", got)
			}
		})
	}
}

// TestGet: the running binary (a test binary) reports its toolchain and some
// version, never an empty one.
func TestGet(t *testing.T) {
	i := Get()
	if i.Version == "" || i.Go != runtime.Version() {
		t.Errorf("Get() = %+v; want a version and Go %s", i, runtime.Version())
	}
}
