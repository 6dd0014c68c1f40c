// Command etcd is etcd's own server (go.etcd.io/etcd/server/v3/etcdmain) at the version
// Kubernetes itself requires, built from the Go module proxy beside the Kubernetes binaries.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
