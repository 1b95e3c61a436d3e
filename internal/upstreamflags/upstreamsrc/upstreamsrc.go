// SPDX-License-Identifier: Apache-2.0

// Package upstreamsrc reads upstream MetalLB's released module source (fetched into the Go
// module cache) for tests that check MagLB's binaries against it: the flags and environment
// variables its controller and speaker define, and the arguments its manifests and Helm chart
// pass them.
package upstreamsrc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// module is upstream's module path.
const module = "go.universe.tf/metallb"

// Versions are the releases MagLB accepts the flags of.
var Versions = []string{"v0.15.2", "v0.16.2"}

// Dir downloads upstream's module at version (a no-op when the module cache has it) and
// returns its source directory.
func Dir(version string) (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", module+"@"+version)
	cmd.Dir = os.TempDir() // outside any module: nothing to resolve against
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w: %s", module, version, err, stderr.String())
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil {
		return "", err
	}
	if mod.Error != "" {
		return "", errors.New(mod.Error)
	}
	return mod.Dir, nil
}

var (
	flagDefinition = regexp.MustCompile(`flag\.(?:String|Int|Bool|Uint|Duration)\("([a-z0-9-]+)"`)
	envRead        = regexp.MustCompile(`os\.(?:Getenv|LookupEnv)\("([A-Z0-9_]+)"\)`)
)

// Defined returns the flags and the environment variables component's main.go defines and
// reads in upstream's source at dir, and for the speaker the variables its FRR mode reads.
func Defined(dir, component string) (flags, env []string, err error) {
	src, err := os.ReadFile(filepath.Join(dir, component, "main.go"))
	if err != nil {
		return nil, nil, err
	}
	for _, m := range flagDefinition.FindAllSubmatch(src, -1) {
		flags = append(flags, string(m[1]))
	}
	if component == "speaker" {
		frr, err := filepath.Glob(filepath.Join(dir, "internal", "bgp", "frr", "*.go"))
		if err != nil {
			return nil, nil, err
		}
		for _, file := range frr {
			if strings.HasSuffix(file, "_test.go") {
				continue
			}
			more, err := os.ReadFile(file)
			if err != nil {
				return nil, nil, err
			}
			src = append(src, more...)
		}
	}
	for _, m := range envRead.FindAllSubmatch(src, -1) {
		env = append(env, string(m[1]))
	}
	slices.Sort(env)
	return flags, slices.Compact(env), nil
}

// ManifestContainer returns component's container in config/manifests/metallb-native.yaml.
func ManifestContainer(dir, component string) (corev1.Container, error) {
	f, err := os.Open(filepath.Join(dir, "config", "manifests", "metallb-native.yaml"))
	if err != nil {
		return corev1.Container{}, err
	}
	defer f.Close()
	docs := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			return corev1.Container{}, fmt.Errorf("no %s workload in the manifest", component)
		}
		if err != nil {
			return corev1.Container{}, err
		}
		var head struct {
			Kind     string
			Metadata struct{ Name string }
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			return corev1.Container{}, err
		}
		if head.Metadata.Name != component || head.Kind != "Deployment" && head.Kind != "DaemonSet" {
			continue
		}
		// Deployment and DaemonSet share spec.template's path.
		var workload appsv1.Deployment
		if err := yaml.Unmarshal(doc, &workload); err != nil {
			return corev1.Container{}, err
		}
		for _, c := range workload.Spec.Template.Spec.Containers {
			if c.Name == component {
				return c, nil
			}
		}
	}
}

var (
	chartArg      = regexp.MustCompile(`^\s*- (--[a-z0-9-]+.*)$`)
	chartTemplate = regexp.MustCompile(`\{\{.*?\}\}`)
)

// ChartArgs returns every argument the Helm chart's template passes to component's container
// (the first args list of charts/metallb/templates/<component>.yaml), whichever values turn
// it on. A templated value is replaced with sample[flag]; a templated flag missing from
// sample is an error, so a new one is noticed.
func ChartArgs(dir, component string, sample map[string]string) ([]string, error) {
	src, err := os.ReadFile(filepath.Join(dir, "charts", "metallb", "templates", component+".yaml"))
	if err != nil {
		return nil, err
	}
	var args []string
	inArgs := false
	for line := range strings.Lines(string(src)) {
		line = strings.TrimRight(line, "\n")
		trimmed := strings.TrimSpace(line)
		if !inArgs {
			inArgs = trimmed == "args:"
			continue
		}
		if strings.HasPrefix(trimmed, "{{") {
			continue // a condition around an argument
		}
		m := chartArg.FindStringSubmatch(line)
		if m == nil {
			return args, nil
		}
		arg := m[1]
		if chartTemplate.MatchString(arg) {
			name, _, _ := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
			value, ok := sample[name]
			if !ok {
				return nil, fmt.Errorf("%s chart: no sample value for the templated %s", component, arg)
			}
			arg = chartTemplate.ReplaceAllString(arg, value)
		}
		args = append(args, arg)
	}
	return nil, fmt.Errorf("%s chart: no args list", component)
}
