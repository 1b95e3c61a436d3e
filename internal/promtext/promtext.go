// SPDX-License-Identifier: Apache-2.0

// Package promtext reads values out of a Prometheus text exposition, as a /metrics endpoint
// serves it: what the tests scrape from a running binary.
package promtext

import (
	"fmt"
	"strconv"
	"strings"
)

// Sum returns the sum of the samples of the metric name whose labels include every one of
// labels ("key=value" each), and how many samples matched.
func Sum(exposition, name string, labels ...string) (sum float64, matched int, err error) {
	samples, err := Samples(exposition, name)
	if err != nil {
		return 0, 0, err
	}
	for labelText, v := range samples {
		if hasLabels(labelText, labels) {
			sum += v
			matched++
		}
	}
	return sum, matched, nil
}

// Samples returns the samples of the metric name by their labels as the exposition writes
// them between the braces (`port="80",protocol="TCP"`; "" for none).
func Samples(exposition, name string) (map[string]float64, error) {
	samples := map[string]float64{}
	for line := range strings.Lines(exposition) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		series, value, ok := cutSeries(line)
		if !ok {
			continue
		}
		metric, labelText, _ := strings.Cut(series, "{")
		if metric != name {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(value)[0], 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", line, err)
		}
		samples[strings.TrimSuffix(labelText, "}")] = v
	}
	return samples, nil
}

// Value returns the one sample of name with labels; no sample is an error.
func Value(exposition, name string, labels ...string) (float64, error) {
	v, n, err := Sum(exposition, name, labels...)
	if err == nil && n == 0 {
		err = fmt.Errorf("no sample of %s%v", name, labels)
	}
	return v, err
}

// cutSeries splits a sample line into its series (name and labels) and the rest; label
// values may hold spaces, so the split is after the closing brace when there is one.
func cutSeries(line string) (series, rest string, ok bool) {
	if i := strings.LastIndex(line, "}"); i >= 0 {
		return line[:i+1], strings.TrimSpace(line[i+1:]), i+1 < len(line)
	}
	return strings.Cut(line, " ")
}

func hasLabels(labelText string, labels []string) bool {
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		if !strings.Contains(labelText, k+`="`+v+`"`) {
			return false
		}
	}
	return true
}
