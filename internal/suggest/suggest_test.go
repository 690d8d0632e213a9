package suggest

import "testing"

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "", 3}, {"", "abc", 3}, {"abc", "abc", 0},
		{"abc", "abd", 1}, {"abc", "ab", 1}, {"abc", "bac", 1}, {"kitten", "sitting", 3},
	} {
		if got := distance(tc.a, tc.b); got != tc.want {
			t.Errorf("distance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestClosest(t *testing.T) {
	names := []string{"status", "members", "join", "remove-node", "leave", "transfer-leader", "snapshot", "write-timeout", "read-timeout"}
	for in, want := range map[string]string{
		"stauts":        "status",   // transposition
		"member":        "members",  // truncation
		"snapshots":     "snapshot", // extra letter
		"MEMBERS":       "members",  // case
		"transfer":      "transfer-leader",
		"wirte-timeout": "write-timeout",
		"read-timout":   "read-timeout",
		"x":             "",
		"frobnicate":    "",
		"":              "",
	} {
		if got := Closest(in, names); got != want {
			t.Errorf("Closest(%q) = %q, want %q", in, got, want)
		}
	}
	if h := Hint("stauts", names); h != " (did you mean status?)" {
		t.Errorf("Hint = %q", h)
	}
	if h := Hint("frobnicate", names); h != "" {
		t.Errorf("Hint of a far name = %q", h)
	}
}
