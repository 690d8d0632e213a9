package bench

import (
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

func TestBucketsAreContiguous(t *testing.T) {
	// Every value maps to a bucket whose upper edge is ≥ the value and whose
	// previous bucket's upper edge is < the value: buckets tile the number line.
	vals := []uint64{0, 1, 63, 64, 65, 127, 128, 129, 1000, 1 << 20, 1<<20 + 12345, 1 << 40, 1<<63 + 5}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 10000; i++ {
		vals = append(vals, r.Uint64()>>r.IntN(64))
	}
	for _, v := range vals {
		i := bucketOf(v)
		if hi := bucketHigh(i); hi < v {
			t.Fatalf("value %d in bucket %d with upper edge %d", v, i, hi)
		}
		if i > 0 && bucketHigh(i-1) >= v {
			t.Fatalf("value %d in bucket %d but previous bucket reaches %d", v, i, bucketHigh(i-1))
		}
		// Relative width is at most 1/64.
		if i >= subBuckets {
			lo := bucketHigh(i-1) + 1
			if w := bucketHigh(i) - lo + 1; float64(w) > float64(lo)/subBuckets+1 {
				t.Fatalf("bucket %d [%d,%d] too wide", i, lo, bucketHigh(i))
			}
		}
	}
}

func TestQuantilesMatchExactWithinPrecision(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var a, b Histogram
	var all []time.Duration
	for i := 0; i < 20000; i++ {
		// Log-normal-ish latencies from 10µs to ~1s.
		d := time.Duration(10_000 * (1 + r.ExpFloat64()*r.ExpFloat64()*50))
		all = append(all, d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if a.Count() != uint64(len(all)) || a.Max() != all[len(all)-1] || a.Min() != all[0] {
		t.Fatalf("count/min/max: %d %v %v, want %d %v %v", a.Count(), a.Min(), a.Max(), len(all), all[0], all[len(all)-1])
	}
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		exact := all[int(q*float64(len(all))+0.999999)-1]
		got := a.Quantile(q)
		if got < exact || float64(got) > float64(exact)*(1+1.0/subBuckets) {
			t.Errorf("q%.3f = %v, exact %v", q, got, exact)
		}
	}
	var sum time.Duration
	for _, d := range all {
		sum += d
	}
	if mean := sum / time.Duration(len(all)); absDur(a.Mean()-mean) > time.Microsecond {
		t.Errorf("mean %v, exact %v", a.Mean(), mean)
	}
}

func TestEmptyHistogram(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Max() != 0 || h.Mean() != 0 || h.Count() != 0 {
		t.Fatal("empty histogram reports values")
	}
	h.Record(-5)
	if h.Max() != 0 || h.Count() != 1 {
		t.Fatal("negative duration not clamped to 0")
	}
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func TestParseMix(t *testing.T) {
	good := map[string]Mix{
		"1:1:1:1":          {1, 1, 1, 1, 0},
		"0:8:1:1:2":        {0, 8, 1, 1, 2},
		"get=8,add=1":      {1, 8, 0, 0, 0},
		"TAKE=1, remove=2": {0, 0, 2, 0, 1},
	}
	for s, want := range good {
		got, err := ParseMix(s)
		if err != nil || got != want {
			t.Errorf("ParseMix(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "1:2", "1:1:1:1:1:1", "0:0:0:0", "a:1:1:1", "-1:1:1:1", "get=x", "foo=1", "get"} {
		if _, err := ParseMix(s); err == nil {
			t.Errorf("ParseMix(%q) accepted", s)
		}
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	for i := 0; b.Loop(); i++ {
		h.Record(time.Duration(i*7919) % time.Second)
	}
}
