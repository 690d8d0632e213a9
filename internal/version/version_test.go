package version

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
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

func TestWithStamp(t *testing.T) {
	base := Info{Version: "v0.0.0-20250102030405-0123456789ab", Revision: "0123456789ab", Go: "go1.26.8"}
	if got := withStamp(base, ""); got != base {
		t.Errorf("no stamp: %+v, want %+v unchanged", got, base)
	}
	got := withStamp(base, "1.4.0")
	if got.Version != "1.4.0" || got.Revision != base.Revision || got.Go != base.Go {
		t.Errorf("stamp 1.4.0: %+v; want the stamp as version and the rest kept", got)
	}
}

// TestLinkStamp builds a program with -ldflags -X, as packaging/build-deb.sh
// does, and checks that it reports the stamp; without the flag (and with
// -buildvcs=false, as CI builds) it reports Unknown.
func TestLinkStamp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program")
	}
	dir := t.TempDir()
	build := func(name string, ldflags ...string) string {
		t.Helper()
		bin := filepath.Join(dir, name)
		args := append([]string{"build", "-buildvcs=false", "-o", bin}, ldflags...)
		out, err := exec.Command("go", append(args, "./testdata/printversion")...).CombinedOutput()
		if err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		out, err = exec.Command(bin).Output()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return strings.TrimSpace(string(out))
	}
	const want = "9.8.7-test"
	if got := build("stamped", "-ldflags", "-X "+StampVar+"="+want); got != want {
		t.Errorf("stamped build reports %q; want %q", got, want)
	}
	if got := build("plain"); got != Unknown {
		t.Errorf("unstamped -buildvcs=false build reports %q; want %q", got, Unknown)
	}
}
