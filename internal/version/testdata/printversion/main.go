// Command printversion prints version.Get().Version, for TestLinkStamp.
package main

import (
	"fmt"

	"github.com/distcache-replicated/distcache/internal/version"
)

func main() { fmt.Println(version.Get().Version) }
