// SPDX-License-Identifier: Apache-2.0

// Package grafana holds MagLB's Grafana dashboard (maglb-dashboard.json, imported into Grafana
// by the user); its test checks that every query names a metric the components export.
package grafana
