package regtest

import (
	"cmp"
	"slices"
)

// Median is the middle value of vs (the upper middle for an even count);
// benchmarks report it rather than a mean, which one noisy run would skew.
func Median[T cmp.Ordered](vs []T) T {
	s := slices.Clone(vs)
	slices.Sort(s)
	return s[len(s)/2]
}
