// Package suggest finds the known name closest to a mistyped one, for the "did
// you mean" hints of dcnode (settings, environment variables, config keys) and
// dcctl (commands, flags). It knows nothing of either program's names.
package suggest
