package suggest

import "strings"

// Closest returns the candidate nearest to name by edit distance, or "" when
// none is near enough to be a plausible typo: at most a third of the longer
// name's length in edits (at least 1, at most 3), or a candidate that
// contains name or is contained in it (a truncated or prefixed spelling).
// Case is ignored. Ties go to the earlier candidate, so the result is stable.
func Closest(name string, candidates []string) string {
	n := strings.ToLower(name)
	best, bestDist := "", -1
	for _, c := range candidates {
		lc := strings.ToLower(c)
		d := distance(n, lc)
		limit := min(max(max(len(n), len(lc))/3, 1), 3)
		if d > limit && !(len(n) >= 4 && (strings.Contains(lc, n) || strings.Contains(n, lc))) {
			continue
		}
		if bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// Hint is Closest as a parenthesised suffix for an error message: " (did you
// mean X?)", or "" when nothing is close.
func Hint(name string, candidates []string) string {
	if c := Closest(name, candidates); c != "" {
		return " (did you mean " + c + "?)"
	}
	return ""
}

// distance is the optimal string alignment distance: insertions, deletions,
// substitutions and transpositions of adjacent bytes each cost 1 (a swapped
// pair of letters is the commonest typo).
func distance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
