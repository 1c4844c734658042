module github.com/pullwise/pullwise/sdk

go 1.26.0

require (
	github.com/mailru/easyjson v0.9.1
	sigs.k8s.io/yaml v1.6.0
)

require (
	github.com/josharian/intern v1.0.0 // indirect
	go.yaml.in/yaml/v2 v2.4.2 // indirect
)
