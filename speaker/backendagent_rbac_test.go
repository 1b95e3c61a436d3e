// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maglb/maglb/internal/rbactest"
)

// The backend agent, with a token of its ServiceAccount bound to exactly its manifest's RBAC,
// does its job: it allows the InternalIPs of the LB nodes (--lb-node-selector) as tunnel
// sources, and follows a node labelled later. With MAGLB_RBAC_TABLE=1, the minus-one-verb
// table (internal/rbactest).
func TestBackendAgentRBAC(t *testing.T) {
	lab := newBGPLab(t, map[string]string{"ba-lb": "172.30.0.2"})
	env := lab.env
	ensureNamespace(t, metallbNamespace)
	rbac, _, kubeconfig := rbactest.Grant(t, env, metallbNamespace, "backend-agent", "config/backend-agent/rbac.yaml")
	labelNode(t, "ba-lb", map[string]string{"role": "lb"})
	createNode(t, "ba-late", "172.30.0.3", nil)
	bpffs := testBPFFS(t)

	job := func(t *testing.T, row rbactest.Row) (string, error) {
		labelNode(t, "ba-late", map[string]string{"role": "other"})
		logPath := filepath.Join(t.TempDir(), "agent.log")
		stop := lab.startLogged(t, "ba-lb", logPath, binary(t), row.Env(), "--role=backend-agent", "--kubeconfig", kubeconfig,
			"--lb-node-selector=role=lb", "--backend-interfaces=eth0", "--xdp-mode=generic", "--decap-hook=xdp",
			"--datapath-pin-path", filepath.Join(bpffs, row.ID()), "--keep-datapath-on-exit=false")
		defer stop()
		steps := rbactest.Steps{LogPath: logPath, Refused: row.Refused, Timeout: 30 * time.Second}
		allowed := func(addr string) func() error {
			return func() error {
				if log := rbactest.ReadLog(logPath); !strings.Contains(lastLine(log, "allowedSources="), addr) {
					return fmt.Errorf("%s not allowed yet", addr)
				}
				return nil
			}
		}
		if err := steps.Wait("the LB node allowed", allowed("172.30.0.2/32")); err != nil {
			return rbactest.ReadLog(logPath), err
		}
		labelNode(t, "ba-late", map[string]string{"role": "lb"})
		err := steps.Wait("the node labelled later allowed", allowed("172.30.0.3/32"))
		return rbactest.ReadLog(logPath), err
	}
	rbactest.Check(t, env.Client, rbac, rbactest.ServiceAccountUser(metallbNamespace, "backend-agent"), job)
}

// lastLine is the last line of log that contains text.
func lastLine(log, text string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], text) {
			return lines[i]
		}
	}
	return ""
}
