// SPDX-License-Identifier: Apache-2.0

package grafana

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/maglb/maglb/datapath"
	"github.com/maglb/maglb/internal/backendagent"
	"github.com/maglb/maglb/internal/bgp"

	// The controller's and the speaker's metrics register themselves when these are imported.
	_ "github.com/maglb/maglb/internal/allocator"
	_ "github.com/maglb/maglb/internal/k8s/configstate"
	_ "github.com/maglb/maglb/internal/k8s/speakercontroller"
	_ "github.com/maglb/maglb/internal/layer2"
)

// Words of PromQL that are not metric names when not followed by "(".
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true,
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

// Modifiers followed by a list of label names.
var labelLists = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// metricNames returns the metric names a PromQL expression selects: the identifiers outside
// label matchers, ranges and strings that are no function, aggregation, keyword or label list.
func metricNames(expr string) []string {
	var names []string
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(expr, i)
		case c == '{':
			i = skipPast(expr, i+1, '}')
		case c == '[':
			i = skipPast(expr, i+1, ']')
		case c == '$' || isDigit(c): // a Grafana variable, a number or a duration
			i = endOfWord(expr, i+1)
		case isIdentStart(c):
			end := endOfWord(expr, i)
			word := expr[i:end]
			rest := strings.TrimLeft(expr[end:], " \t\n")
			switch {
			case labelLists[word] && strings.HasPrefix(rest, "("):
				end = skipPast(expr, len(expr)-len(rest)+1, ')')
			case keywords[strings.ToLower(word)] || strings.HasPrefix(rest, "("):
			default:
				names = append(names, word)
			}
			i = end
		default:
			i++
		}
	}
	return names
}

// variableMetricNames returns the metric names of a template variable's query:
// label_values(metric, label) names its metric, label_values(label) none.
func variableMetricNames(query string) []string {
	if args, ok := strings.CutPrefix(query, "label_values("); ok {
		selector, _, twoArgs := strings.Cut(args, ",")
		if !twoArgs {
			return nil
		}
		return metricNames(selector)
	}
	return metricNames(query)
}

func skipPast(s string, i int, closing byte) int {
	for i < len(s) && s[i] != closing {
		if s[i] == '"' || s[i] == '\'' || s[i] == '`' {
			i = skipString(s, i)
			continue
		}
		i++
	}
	return i + 1
}

// skipString returns the index after the string literal starting at i.
func skipString(s string, i int) int {
	quote := s[i]
	for i++; i < len(s) && s[i] != quote; i++ {
		if s[i] == '\\' && quote != '`' {
			i++
		}
	}
	return i + 1
}

func endOfWord(s string, i int) int {
	for i < len(s) && (isIdentStart(s[i]) || isDigit(s[i])) {
		i++
	}
	return i
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// exporters returns the registries the binaries serve, holding the real collectors:
// controller-runtime's (the controller's and the speaker's metrics, the BGP speaker's once one
// is created, the datapath collector as the speaker registers it) and the backend agent's.
var exporters = sync.OnceValues(func() ([]prometheus.Registerer, error) {
	if _, err := bgp.New(log.NewNopLogger(), bgp.Options{ListenPort: -1}); err != nil {
		return nil, err
	}
	if err := crmetrics.Registry.Register(datapath.NewCollector(nil)); err != nil {
		return nil, err
	}
	agent := prometheus.NewRegistry()
	if err := agent.Register(backendagent.NewCollector(nil)); err != nil {
		return nil, err
	}
	return []prometheus.Registerer{crmetrics.Registry, agent}, nil
})

// probe is a collector of one descriptor.
type probe struct{ desc *prometheus.Desc }

func (p probe) Describe(ch chan<- *prometheus.Desc) { ch <- p.desc }
func (probe) Collect(chan<- prometheus.Metric)      {}

// describes reports whether a collector registered in r describes the metric name. A registry
// does not list its descriptors, but it refuses a second one of the same name.
func describes(r prometheus.Registerer, name string) bool {
	p := probe{prometheus.NewDesc(name, "probe", nil, nil)}
	if err := r.Register(p); err != nil {
		return true
	}
	r.Unregister(p)
	return false
}

// unexported returns the names in names that no component exports.
func unexported(t *testing.T, names []string) []string {
	t.Helper()
	registries, err := exporters()
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for _, name := range names {
		if !slices.ContainsFunc(registries, func(r prometheus.Registerer) bool { return describes(r, name) }) {
			missing = append(missing, name)
		}
	}
	return missing
}

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum by (vip, port) (rate(maglb_datapath_service_packets_total{instance=~"$instance", vip=~"$vip"}[$__rate_interval]))`,
			[]string{"maglb_datapath_service_packets_total"}},
		{`sum(rate(a_total[5m])) without (reason) / on(node) group_left(pool) b:recorded`, []string{"a_total", "b:recorded"}},
		{`x{l="}", m='{'} offset 5m > bool 0.5e3 unless y`, []string{"x", "y"}},
		{`max by (node, peer) (metallb_bgp_session_up) == 1 and max(z) * 100`, []string{"metallb_bgp_session_up", "z"}},
		{`label_replace(up, "to", "$1", "from", "(.*)")`, []string{"up"}},
		{`vector(1)`, nil},
	} {
		if got := metricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%s) = %q, want %q", tc.expr, got, tc.want)
		}
	}
	for query, want := range map[string][]string{
		"label_values(maglb_datapath_service_packets_total, vip)":           {"maglb_datapath_service_packets_total"},
		`label_values(metallb_bgp_session_up{instance=~"$instance"}, peer)`: {"metallb_bgp_session_up"},
		"label_values(instance)": nil,
	} {
		if got := variableMetricNames(query); !slices.Equal(got, want) {
			t.Errorf("variableMetricNames(%s) = %q, want %q", query, got, want)
		}
	}
}

func TestUnexported(t *testing.T) {
	for _, tc := range []struct {
		expr    string
		missing []string
	}{
		{`rate(maglb_datapath_packets_total[5m]) + maglb_decap_bytes_total + metallb_allocator_addresses_total`, nil},
		{`metallb_bgp_session_up + metallb_speaker_announced + rate(metallb_layer2_requests_received[5m])`, nil},
		{`rate(maglb_datapath_bogus_total[5m])`, []string{"maglb_datapath_bogus_total"}},
		// Counter names are matched as exposed: with _total only where the component adds it.
		{`maglb_datapath_packets + metallb_layer2_requests_received_total`,
			[]string{"maglb_datapath_packets", "metallb_layer2_requests_received_total"}},
	} {
		if got := unexported(t, metricNames(tc.expr)); !slices.Equal(got, tc.missing) {
			t.Errorf("unexported(%s) = %q, want %q", tc.expr, got, tc.missing)
		}
	}
}

type dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title      string `json:"title"`
		Type       string `json:"type"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile("maglb-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d, want at least 36", d.SchemaVersion)
	}
	queries := map[string][]string{} // where → metric names
	hasDatasource := false
	for _, v := range d.Templating.List {
		var query string
		var editor struct{ Query string }
		if json.Unmarshal(v.Query, &query) != nil && json.Unmarshal(v.Query, &editor) == nil {
			query = editor.Query
		}
		switch v.Type {
		case "datasource":
			hasDatasource = hasDatasource || v.Name == "datasource" && query == "prometheus"
		case "query":
			queries["variable "+v.Name] = variableMetricNames(query)
		}
	}
	if !hasDatasource {
		t.Error(`no "datasource" variable of Prometheus data sources`)
	}
	panels := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		panels++
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: data source %q, want ${datasource}", p.Title, p.Datasource.UID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for i, target := range p.Targets {
			names := metricNames(target.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q query %d names no metric: %s", p.Title, i, target.Expr)
			}
			queries["panel "+p.Title+" query "+string(rune('A'+i))] = names
		}
	}
	if panels == 0 {
		t.Fatal("no panel")
	}
	for where, names := range queries {
		if missing := unexported(t, names); len(missing) > 0 {
			t.Errorf("%s: %q exported by no component", where, missing)
		}
	}
}
