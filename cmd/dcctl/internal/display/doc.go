// Package display converts session ids and values between the command line and
// human-readable output.
//
// TLS session ids are binary, so dcctl accepts "hex:0a1b..." anywhere an id or value
// is typed, and prints bytes as text only when they read as text. The printed form of
// a binary id ("hex:...") is the same syntax the parser accepts, so an id copied from
// snoop or get output can be pasted back into a command.
//
// It must not know the wire protocol or the commands that use it: it only formats and parses bytes.
package display
