// Command settingsdoc prints the settings table of the README from internal/config.Settings, so that the
// documentation and the code cannot drift apart (a test compares them).
package main

import (
	"fmt"
	"os"

	"github.com/spomig/spomig/internal/config"
)

func main() { fmt.Fprint(os.Stdout, config.SettingsMarkdown()) }
