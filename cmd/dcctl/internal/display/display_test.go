package display

import (
	"bytes"
	"testing"
)

func TestParse(t *testing.T) {
	cases := map[string][]byte{
		"abc":              []byte("abc"),
		"":                 {},
		"hex:":             {},
		"hex:00FF10":       {0x00, 0xff, 0x10},
		"hex:de:ad be\tef": {0xde, 0xad, 0xbe, 0xef},
		"HEX:00":           []byte("HEX:00"), // the prefix is lower case only
	}
	for in, want := range cases {
		got, err := Parse(in)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("Parse(%q) = %x, %v; want %x", in, got, err, want)
		}
	}
	for _, in := range []string{"hex:0", "hex:zz", "hex:0g"} {
		if _, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) accepted", in)
		}
	}
}

func TestBytesRoundTrips(t *testing.T) {
	for _, b := range [][]byte{[]byte("abc"), {0, 1, 2, 0xff}, []byte("hex:abc"), []byte("héllo")} {
		s := Bytes(b, 0)
		if s[0] == '"' {
			continue // quoted form is for humans, not re-parsing
		}
		back, err := Parse(s)
		if err != nil || !bytes.Equal(back, b) {
			t.Errorf("Bytes(%x) = %q parses back to %x, %v", b, s, back, err)
		}
	}
}

func TestBytes(t *testing.T) {
	cases := []struct {
		in   []byte
		max  int
		want string
	}{
		{[]byte("abc"), 0, "abc"},
		{[]byte("a b"), 0, `"a b"`},
		{[]byte{0x00, 0x01}, 0, "hex:0001"},
		{nil, 0, `""`},
		{[]byte("abcdef"), 3, "abc…"},
		{[]byte{1, 2, 3, 4}, 2, "hex:0102…"},
		{[]byte("aé"), 2, "a…"}, // never cut a character in half
		{[]byte("hex:41"), 0, "hex:6865783a3431"},
	}
	for _, c := range cases {
		if got := Bytes(c.in, c.max); got != c.want {
			t.Errorf("Bytes(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
	}
	if Printable([]byte{}) || Printable([]byte{0xff}) || Printable([]byte("a\x00")) || !Printable([]byte("tab\tnl\n")) {
		t.Error("Printable misclassifies")
	}
}
