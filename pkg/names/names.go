// Package names makes the deterministic object names prepull gives what it
// creates on someone's behalf (secret copies, list jobs' children,
// workloads' jobs): a readable prefix and a hash of what the object is for,
// so a retried create meets AlreadyExists instead of making a second one,
// and two keys never share a name even when their prefixes do.
package names

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// maxPrefix leaves room for the suffix within the 253 characters of a
// DNS subdomain, with margin for whatever a caller adds.
const maxPrefix = 200

// Hashed is prefix, cut to fit, then "-" and the first 10 hex digits of
// the SHA-256 of key. A cut that ends in "-" or "." is trimmed further:
// "x.-" would not be a valid name.
func Hashed(prefix, key string) string {
	sum := sha256.Sum256([]byte(key))
	suffix := hex.EncodeToString(sum[:])[:10]
	if len(prefix) > maxPrefix {
		prefix = prefix[:maxPrefix]
	}
	prefix = strings.TrimRight(prefix, "-.")
	if prefix == "" {
		return suffix
	}
	return prefix + "-" + suffix
}
