// Package testtool finds the external programs that end-to-end tests run (Apache
// httpd, nginx, HAProxy, stunnel, openssl): a test that needs a missing one is
// skipped on a developer's machine and fails in CI, which installs every one of them
// (.ci/run). It knows nothing of what the programs are for.
package testtool
