package display

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// HexPrefix marks a command-line id or value given in hex.
const HexPrefix = "hex:"

// Parse decodes a command-line id or value: "hex:0a1b..." is hex (case-insensitive,
// whitespace and ':' separators allowed), anything else is the text's bytes.
func Parse(s string) ([]byte, error) {
	if !strings.HasPrefix(s, HexPrefix) {
		return []byte(s), nil
	}
	h := strings.Map(func(r rune) rune {
		if r == ':' || unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s[len(HexPrefix):])
	b, err := hex.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("bad hex in %q: %w", s, err)
	}
	return b, nil
}

// Printable reports whether b reads as text: non-empty valid UTF-8 of printable
// characters (tab, CR and LF allowed).
func Printable(b []byte) bool {
	if len(b) == 0 || !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) && r != '\t' && r != '\n' && r != '\r' {
			return false
		}
	}
	return true
}

// Bytes renders b on one line: plain text when it is printable without spaces or
// quotes, a Go-quoted string when printable otherwise, and "hex:..." for binary data.
// When max > 0 only the first max bytes are shown, followed by "…".
func Bytes(b []byte, max int) string {
	trunc := ""
	if max > 0 && len(b) > max {
		b, trunc = b[:max], "…"
		// Do not cut a multi-byte character in half: back off up to 3 bytes if that
		// turns the prefix into valid UTF-8 (binary data stays cut at max).
		for i := 1; i <= 3 && i < len(b) && !utf8.Valid(b); i++ {
			if utf8.Valid(b[:len(b)-i]) {
				b = b[:len(b)-i]
				break
			}
		}
	}
	if len(b) == 0 {
		return `""` + trunc
	}
	if Printable(b) && !strings.HasPrefix(string(b), HexPrefix) {
		s := string(b)
		if strings.ContainsAny(s, " \t\r\n\"\\") {
			return strconv.Quote(s) + trunc
		}
		return s + trunc
	}
	return HexPrefix + hex.EncodeToString(b) + trunc
}
