// Command credplugin is a kubelet credential provider exec plugin for
// tests: it answers a CredentialProviderRequest on stdin with basic-auth
// credentials for one registry, counts its calls in a file, and can
// misbehave on purpose (-mode).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

func main() {
	mode := flag.String("mode", "ok", "ok, fail (exit 1, a token on stderr), garbage (not JSON), hang, flood (an endless answer), slow (answers after -delay), wrongversion, or badkey (unknown cacheKeyType)")
	delay := flag.Duration("delay", 300*time.Millisecond, "how long -mode=slow waits before it answers")
	keyType := flag.String("key-type", "Registry", "cacheKeyType to answer: Image, Registry or Global")
	cache := flag.String("cache", "", "cacheDuration to answer, e.g. 10s; empty leaves it out")
	registry := flag.String("registry", "", "registry pattern the credentials are for; empty: the requested image's")
	user := flag.String("user", "", "username")
	pass := flag.String("pass", "", "password")
	countFile := flag.String("count-file", os.Getenv("CREDPLUGIN_COUNT_FILE"), "file that gets one line per call (the image)")
	flag.Parse()

	var req struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Image      string `json:"image"`
	}
	data, _ := io.ReadAll(os.Stdin)
	if err := json.Unmarshal(data, &req); err != nil || req.Kind != "CredentialProviderRequest" {
		fmt.Fprintf(os.Stderr, "bad request: %s\n", data)
		os.Exit(2)
	}
	if *countFile != "" {
		f, err := os.OpenFile(*countFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintln(f, req.Image)
			f.Close()
		}
	}
	switch *mode {
	case "fail":
		fmt.Fprintln(os.Stderr, "no cloud identity on this node; debug: token=stderr-secret")
		os.Exit(1)
	case "flood":
		chunk := make([]byte, 64<<10)
		for i := range chunk {
			chunk[i] = 'x'
		}
		for {
			if _, err := os.Stdout.Write(chunk); err != nil {
				return
			}
		}
	case "slow":
		time.Sleep(*delay)
	case "garbage":
		fmt.Print("{this is not json")
		return
	case "hang":
		time.Sleep(time.Hour)
	}
	apiVersion := req.APIVersion
	if *mode == "wrongversion" {
		apiVersion = "credentialprovider.kubelet.k8s.io/v1alpha1"
	}
	if *mode == "badkey" {
		*keyType = "Sometimes"
	}
	key := *registry
	if key == "" {
		key = req.Image
	}
	resp := map[string]any{
		"apiVersion":   apiVersion,
		"kind":         "CredentialProviderResponse",
		"cacheKeyType": *keyType,
		"auth":         map[string]any{key: map[string]string{"username": *user, "password": *pass}},
	}
	if *cache != "" {
		resp["cacheDuration"] = *cache
	}
	_ = json.NewEncoder(os.Stdout).Encode(resp)
}
