package testtool

import (
	"os"
	"os/exec"
	"testing"
)

// Look returns the path of the program name. Without it, it skips t outside CI
// (the CI variable unset) and fails t in CI.
func Look(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "" {
		t.Skipf("%s is not installed (.ci/run lists the packages to apt-get install): %v", name, err)
	}
	t.Fatalf("%s is not installed, but CI must provide it (.ci/run): %v", name, err)
	return ""
}
