// Command dcnode runs one node of a replicated distcache session cache, or with
// -dev-cluster a whole local cluster in one process for trying it out.
//
// It keeps the original dc_server's flags where they still mean something (-listen,
// -sessions, -pidfile, -user, -sockowner, -sockgroup, -sockperms, -progress,
// -killable) and adds the cluster's own. Run `dcnode -help` for the list.
//
// # Settings
//
// Every setting is declared once, in the registry (settings.go): its name, group,
// value type with default and checks, a valid example and the help line. From
// that one entry come the flag (-write-timeout), the environment variable
// (DCNODE_WRITE_TIMEOUT), the config-file key (write-timeout = 2s), -help,
// -print-config and the README's table. Precedence is flag, then environment,
// then config file (-config / DCNODE_CONFIG), then default; a repeatable setting
// takes all its values from one source. Unknown flags, DCNODE_* variables and
// config keys are errors with a "did you mean".
//
// To add a setting:
//
//  1. add a field to options (settings.go);
//  2. add one entry to registry in the group it belongs to, with a value type
//     from values.go bound to the field (its default set through setInt,
//     setString, ... or newListValue), an example that parses, and a usage
//     line whose `word` in backquotes names the value;
//  3. use the field (nodeConfig maps options onto node.Config; validate holds
//     checks that involve several settings, naming them with label);
//  4. run `go test ./cmd/dcnode -run 'README|Packaged' -update` to regenerate
//     README's table and the packaged config file and dcnode(8) in packaging/.
//     The tests check the entry (name, example, usage) for you.
//
// A value type's Set says in words what is wrong with a value; the source that
// read it adds which setting it was and the example.
//
// # Under systemd
//
// notify.go speaks sd_notify(3) for the packaged Type=notify unit: READY=1 once
// the node passes the /readyz check, STATUS= lines, WATCHDOG=1 and STOPPING=1.
// packaging.go generates the config file and dcnode(8) that the package ships
// (packaging/), from the registry.
//
// This package must not know how the node works inside: it maps settings onto
// node.Config and runs node.Start.
package main
