package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The value types of settings. Each is a flag.Value bound to a field of options;
// Set checks what it can check alone (syntax, range, enumeration) and says what
// is wrong in words an operator can act on. The caller adds which setting it was
// and a valid example (see setting.example), whichever source the value came from.

// stringValue is free text, optionally checked.
type stringValue struct {
	p     *string
	check func(string) error
}

func (v stringValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v stringValue) Set(s string) error {
	if v.check != nil {
		if err := v.check(s); err != nil {
			return err
		}
	}
	*v.p = s
	return nil
}

// oneOf checks that a value is one of a fixed list.
func oneOf(choices ...string) func(string) error {
	return func(s string) error {
		for _, c := range choices {
			if s == c {
				return nil
			}
		}
		return fmt.Errorf("want %s", orList(choices))
	}
}

// orList renders "a, b or c".
func orList(choices []string) string {
	if len(choices) == 1 {
		return choices[0]
	}
	return strings.Join(choices[:len(choices)-1], ", ") + " or " + choices[len(choices)-1]
}

// intValue is a whole number within [min, max].
type intValue struct {
	p        *int
	min, max int
}

func (v intValue) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.Itoa(*v.p)
}

func (v intValue) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return errors.New("not a whole number")
	}
	if err := inRange(int64(n), int64(v.min), int64(v.max)); err != nil {
		return err
	}
	*v.p = n
	return nil
}

func inRange(n, lo, hi int64) error {
	if n < lo || n > hi {
		if hi == maxInt {
			return fmt.Errorf("must be at least %d", lo)
		}
		return fmt.Errorf("must be %d to %d", lo, hi)
	}
	return nil
}

const maxInt = int64(^uint(0) >> 1)

// uint64Value is a count of zero or more.
type uint64Value struct{ p *uint64 }

func (v uint64Value) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.FormatUint(*v.p, 10)
}

func (v uint64Value) Set(s string) error {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return errors.New("not a whole number of 0 or more")
	}
	*v.p = n
	return nil
}

// durationValue is a Go duration of at least min.
type durationValue struct {
	p   *time.Duration
	min time.Duration
}

func (v durationValue) String() string {
	if v.p == nil {
		return "0s"
	}
	return v.p.String()
}

func (v durationValue) Set(s string) error {
	s = strings.TrimSpace(s)
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil && s != "0" {
			return errors.New("a duration needs a unit (ms, s, m or h)")
		}
		return errors.New("not a duration such as 500ms, 2s or 1m30s")
	}
	if d < v.min {
		if v.min == 0 {
			return errors.New("must not be negative")
		}
		return fmt.Errorf("must be at least %v", v.min)
	}
	*v.p = d
	return nil
}

// boolValue is true or false; as a flag it needs no argument.
type boolValue struct{ p *bool }

func (v boolValue) String() string   { return strconv.FormatBool(v.p != nil && *v.p) }
func (v boolValue) IsBoolFlag() bool { return true }

func (v boolValue) Set(s string) error {
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return errors.New("want true or false")
	}
	*v.p = b
	return nil
}

// bytesValue is a size such as 1073741824, 512MiB or 1GiB.
type bytesValue struct{ p *int64 }

func (v bytesValue) String() string {
	if v.p == nil {
		return "0"
	}
	return formatBytes(*v.p)
}

func (v bytesValue) Set(s string) error {
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	*v.p = n
	return nil
}

// parseBytes reads sizes such as 1073741824, 512MiB or 1GiB.
func parseBytes(s string) (int64, error) {
	mult := int64(1)
	num := strings.TrimSpace(s)
	for _, u := range byteUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v <= 0 || v > maxInt/mult {
		return 0, errors.New("not a positive size in bytes, KiB, MiB or GiB")
	}
	return v * mult, nil
}

// byteUnits are the suffixes parseBytes accepts, longest first.
var byteUnits = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000_000}, {"GB", 1000_000_000}, {"B", 1}}

// formatBytes renders n with the largest binary unit that divides it, so that
// parseBytes reads it back unchanged.
func formatBytes(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// listValue is a repeatable setting that also accepts comma-separated values.
// The first Set replaces the default; later ones append (a flag given twice,
// a key repeated in the config file).
type listValue struct {
	p     *[]string
	check func(string) error
	set   *bool
}

func newListValue(p *[]string, def []string, check func(string) error) listValue {
	*p = def
	return listValue{p: p, check: check, set: new(bool)}
}

func (v listValue) String() string {
	if v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}

func (v listValue) Set(s string) error {
	var add []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		if v.check != nil {
			if err := v.check(e); err != nil {
				return fmt.Errorf("%q: %w", e, err)
			}
		}
		add = append(add, e)
	}
	if !*v.set {
		*v.p, *v.set = nil, true
	}
	*v.p = append(*v.p, add...)
	return nil
}

// values returns the list itself, for printing one entry per line.
func (v listValue) values() []string { return *v.p }
