package version

import (
	"fmt"
	"runtime/debug"
	"strings"
	"time"
)

// stamp is the version given at link time by a release build:
//
//	go build -ldflags "-X github.com/distcache-replicated/distcache/internal/version.stamp=1.2.0" ./cmd/...
//
// packaging/build-deb.sh sets it, so a package says its own version even when
// the toolchain stamps nothing (GOFLAGS=-buildvcs=false, a source tarball
// without .git). It is a variable only because the linker can set nothing
// else; no code assigns it.
var stamp string

// StampVar is the linker's name for stamp, for -ldflags "-X StampVar=VERSION".
const StampVar = "github.com/distcache-replicated/distcache/internal/version.stamp"

// Unknown is the version of a build that carries no module version and no VCS
// revision (go test binaries, go build -buildvcs=false of a work tree).
const Unknown = "devel"

// Info describes one build.
type Info struct {
	// Version is the module version the toolchain stamped (a tag such as
	// v1.2.0, or a pseudo-version for an untagged commit, "+dirty" when built
	// from modified files), "devel-REVISION" when only the revision is known,
	// or Unknown.
	Version string
	// Revision is the VCS commit the binary was built from; "" if unknown.
	Revision string
	// Time is the commit's time; zero if unknown.
	Time time.Time
	// Modified reports that the work tree had uncommitted changes.
	Modified bool
	// Go is the toolchain that built the binary, e.g. go1.26.8.
	Go string
}

// Get returns this binary's build information (a few microseconds: callers need
// not keep it).
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = &debug.BuildInfo{}
	}
	return withStamp(fromBuildInfo(bi), stamp)
}

// withStamp puts a link-time stamp in place of the version the toolchain
// derived: a release's explicit version wins over a pseudo-version or "devel".
// The revision, time and toolchain still come from the build info.
func withStamp(info Info, stamp string) Info {
	if stamp != "" {
		info.Version = stamp
	}
	return info
}

// fromBuildInfo maps the toolchain's stamp onto an Info, with a fallback for each
// piece the stamp lacks.
func fromBuildInfo(bi *debug.BuildInfo) Info {
	info := Info{Go: bi.GoVersion}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time, _ = time.Parse(time.RFC3339, s.Value)
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	switch v := bi.Main.Version; {
	case v != "" && v != "(devel)":
		info.Version = v
	case info.Revision != "":
		info.Version = Unknown + "-" + short(info.Revision)
		if info.Modified {
			info.Version += "+dirty"
		}
	default:
		info.Version = Unknown
	}
	return info
}

// String is the one-line form printed by -version and in logs:
// "v1.2.0 (revision 0123abcd4567, 2025-01-02T03:04:05Z, modified; go1.26.8)".
func (i Info) String() string {
	var parts []string
	if i.Revision != "" {
		parts = append(parts, "revision "+short(i.Revision))
	}
	if !i.Time.IsZero() {
		parts = append(parts, i.Time.UTC().Format(time.RFC3339))
	}
	if i.Modified {
		parts = append(parts, "modified")
	}
	detail := strings.Join(parts, ", ")
	if i.Go != "" {
		if detail != "" {
			detail += "; "
		}
		detail += i.Go
	}
	if detail == "" {
		return i.Version
	}
	return fmt.Sprintf("%s (%s)", i.Version, detail)
}

// short abbreviates a commit id to the 12 characters tools usually show.
func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}
