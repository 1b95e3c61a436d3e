// SPDX-License-Identifier: Apache-2.0

// Package bpf holds the Go bindings bpf2go generates for the datapath's C programs in src/:
// LB (the XDP load balancer), Decap (decapsulation on backend nodes), LBBench (the balancer
// with entry points for BPF_PROG_RUN benchmarks) and Traffic (generator and sink for the
// packet-rate benchmark). The generated files are committed, so building needs no compiler.
package bpf

//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -target bpfel -cflags "-O2 -mcpu=v3 -Wall -Werror" -type drop_reason -type vip_flags LB src/lb.c
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -target bpfel -cflags "-O2 -mcpu=v3 -Wall -Werror" Decap src/decap.c
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -target bpfel -cflags "-O2 -mcpu=v3 -Wall -Werror" -no-global-types LBBench src/bench.c
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -target bpfel -cflags "-O2 -mcpu=v3 -Wall -Werror" -no-global-types Traffic src/traffic.c
