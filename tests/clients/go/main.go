// Everyday work with the Go clients sarama (github.com/Shopify/sarama 1.22) and kafka-go
// (github.com/segmentio/kafka-go 0.2), for the client tests. Built offline in GOPATH mode from
// Debian's packages (scripts/setup.sh installs them; tests/support/go.rs builds this program).
//
// Usage:
//
//	go-client produce    --client C --bootstrap HOST:PORT --topic T --count N [--prefix m-]
//	go-client consume    --client C --bootstrap HOST:PORT --topic T --count N
//	go-client create     --client C --bootstrap HOST:PORT --topic T [--partitions P]
//	go-client delete     --client C --bootstrap HOST:PORT --topic T
//	go-client admin-loop --client C --bootstrap HOST:PORT --count N [--prefix P] [--pause SECONDS]
//	common option: [--timeout SECONDS] (default 60); C is sarama or kafka-go
//
// produce: sends `<prefix><i>` for i = 0..N-1, one message per request (so one record batch
// each: Tansu 0.6.0 answers a Fetch that starts inside a batch with nothing from it), waiting
// for every acknowledgement (acks=all). Prints {"delivered": N}.
// consume: reads every partition of T from its first offset until N messages have come, without
// a consumer group. Prints {"values": [...]} in the order read.
// create / delete: prints {"created": T} / {"deleted": T}.
// admin-loop: creates and deletes topics P-0 .. P-(N-1), one call at a time with --pause between
// calls (default 0), and counts the outcomes; prints {"ok": n, "failed": {"<error text>": n, ...}, "not_controller": n}.
//
// sarama's ClusterAdmin sends admin requests to the controller named by the metadata it holds
// (CreateTopics v2, DeleteTopics v1) and does not retry NOT_CONTROLLER. kafka-go's Conn sends
// CreateTopics v0 and DeleteTopics v1 to the broker it is connected to (the first bootstrap
// address here), as applications using kafka-go 0.2 do, and hands NOT_CONTROLLER to the
// application as the error `[41] Not Controller: ...`.
//
// Exits non-zero with a message on stderr on any other failure or after --timeout.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/Shopify/sarama"
	kafka "github.com/segmentio/kafka-go"
)

type options struct {
	client     string
	bootstrap  []string
	topic      string
	count      int
	prefix     string
	partitions int
	timeout    time.Duration
	pause      time.Duration
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: go-client produce|consume|create|delete|admin-loop --client sarama|kafka-go --bootstrap HOST:PORT ...")
	}
	command := os.Args[1]
	flags := flag.NewFlagSet(command, flag.ExitOnError)
	client := flags.String("client", "sarama", "sarama or kafka-go")
	bootstrap := flags.String("bootstrap", "", "HOST:PORT[,HOST:PORT...]")
	topic := flags.String("topic", "", "topic")
	count := flags.Int("count", 0, "messages, or create+delete rounds for admin-loop")
	prefix := flags.String("prefix", "", "message prefix (m-) or topic prefix for admin-loop (loop)")
	partitions := flags.Int("partitions", 1, "partitions of a created topic")
	timeout := flags.Float64("timeout", 60, "seconds")
	pause := flags.Float64("pause", 0, "seconds between admin-loop calls")
	flags.Parse(os.Args[2:])
	if *bootstrap == "" {
		fail("--bootstrap is required")
	}
	if *prefix == "" {
		*prefix = "m-"
		if command == "admin-loop" {
			*prefix = "loop"
		}
	}
	opts := options{
		client:     *client,
		bootstrap:  strings.Split(*bootstrap, ","),
		topic:      *topic,
		count:      *count,
		prefix:     *prefix,
		partitions: *partitions,
		timeout:    time.Duration(*timeout * float64(time.Second)),
		pause:      time.Duration(*pause * float64(time.Second)),
	}
	go func() {
		time.Sleep(opts.timeout)
		fail(fmt.Sprintf("%s did not finish within %s", command, opts.timeout))
	}()
	var work func(options) (interface{}, error)
	switch {
	case command == "produce" && opts.client == "sarama":
		work = saramaProduce
	case command == "consume" && opts.client == "sarama":
		work = saramaConsume
	case command == "create" || command == "delete" || command == "admin-loop":
		admin, err := newAdmin(opts)
		if err != nil {
			fail(err.Error())
		}
		work = func(opts options) (interface{}, error) { return runAdmin(command, admin, opts) }
	default:
		fail(fmt.Sprintf("%s is not a command of --client %s", command, opts.client))
	}
	result, err := work(opts)
	if err != nil {
		fail(fmt.Sprintf("%s: %v", command, err))
	}
	out, _ := json.Marshal(result)
	fmt.Println(string(out))
}

func fail(message string) {
	fmt.Fprintf(os.Stderr, "go-client: error: %s\n", message)
	os.Exit(1)
}

// ---------------------------------------------------------------------------------- sarama --

func saramaConfig() *sarama.Config {
	config := sarama.NewConfig()
	config.ClientID = "kafka-sidecar-tests"
	config.Version = sarama.V1_0_0_0 // record batches; CreateTopics v2, DeleteTopics v1
	config.Net.DialTimeout = 5 * time.Second
	config.Admin.Timeout = 10 * time.Second
	config.Metadata.Retry.Max = 5
	config.Producer.RequiredAcks = sarama.WaitForAll
	config.Producer.Return.Successes = true
	config.Consumer.Offsets.Initial = sarama.OffsetOldest
	return config
}

func saramaProduce(opts options) (interface{}, error) {
	producer, err := sarama.NewSyncProducer(opts.bootstrap, saramaConfig())
	if err != nil {
		return nil, err
	}
	defer producer.Close()
	for i := 0; i < opts.count; i++ {
		message := &sarama.ProducerMessage{Topic: opts.topic, Value: sarama.StringEncoder(fmt.Sprintf("%s%d", opts.prefix, i))}
		if _, _, err := producer.SendMessage(message); err != nil {
			return nil, fmt.Errorf("message %d: %w", i, err)
		}
	}
	return map[string]int{"delivered": opts.count}, nil
}

func saramaConsume(opts options) (interface{}, error) {
	consumer, err := sarama.NewConsumer(opts.bootstrap, saramaConfig())
	if err != nil {
		return nil, err
	}
	defer consumer.Close()
	partitions, err := consumer.Partitions(opts.topic)
	if err != nil {
		return nil, err
	}
	messages := make(chan string)
	failures := make(chan error, len(partitions))
	for _, partition := range partitions {
		pc, err := consumer.ConsumePartition(opts.topic, partition, sarama.OffsetOldest)
		if err != nil {
			return nil, fmt.Errorf("partition %d: %w", partition, err)
		}
		defer pc.Close()
		go func() {
			for {
				select {
				case message, ok := <-pc.Messages():
					if !ok {
						return
					}
					messages <- string(message.Value)
				case err, ok := <-pc.Errors():
					if ok {
						failures <- err
					}
					return
				}
			}
		}()
	}
	values := []string{}
	for len(values) < opts.count {
		select {
		case value := <-messages:
			values = append(values, value)
		case err := <-failures:
			return nil, err
		}
	}
	return map[string][]string{"values": values}, nil
}

// ---------------------------------------------------------------------------------- admin ---

// admin creates and deletes topics with one of the libraries.
type admin interface {
	create(topic string, partitions int) error
	delete(topic string) error
	// notController tells whether err is NOT_CONTROLLER (41) as the library hands it over.
	notController(err error) bool
	close()
}

func newAdmin(opts options) (admin, error) {
	switch opts.client {
	case "sarama":
		ca, err := sarama.NewClusterAdmin(opts.bootstrap, saramaConfig())
		if err != nil {
			return nil, err
		}
		return saramaAdmin{ca}, nil
	case "kafka-go":
		conn, err := kafka.Dial("tcp", opts.bootstrap[0])
		if err != nil {
			return nil, err
		}
		return kafkaGoAdmin{conn}, nil
	}
	return nil, fmt.Errorf("unknown --client %q (sarama or kafka-go)", opts.client)
}

type saramaAdmin struct{ ca sarama.ClusterAdmin }

func (a saramaAdmin) create(topic string, partitions int) error {
	return a.ca.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: int32(partitions), ReplicationFactor: 1}, false)
}

func (a saramaAdmin) delete(topic string) error { return a.ca.DeleteTopic(topic) }

func (a saramaAdmin) notController(err error) bool {
	var topicErr *sarama.TopicError
	if errors.As(err, &topicErr) {
		return topicErr.Err == sarama.ErrNotController
	}
	return errors.Is(err, sarama.ErrNotController)
}

func (a saramaAdmin) close() { a.ca.Close() }

type kafkaGoAdmin struct{ conn *kafka.Conn }

func (a kafkaGoAdmin) create(topic string, partitions int) error {
	a.conn.SetDeadline(time.Now().Add(15 * time.Second))
	return a.conn.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1})
}

func (a kafkaGoAdmin) delete(topic string) error {
	a.conn.SetDeadline(time.Now().Add(15 * time.Second))
	return a.conn.DeleteTopics(topic)
}

func (a kafkaGoAdmin) notController(err error) bool { return errors.Is(err, kafka.NotController) }

func (a kafkaGoAdmin) close() { a.conn.Close() }

func runAdmin(command string, a admin, opts options) (interface{}, error) {
	defer a.close()
	switch command {
	case "create":
		if err := a.create(opts.topic, opts.partitions); err != nil {
			return nil, err
		}
		return map[string]string{"created": opts.topic}, nil
	case "delete":
		if err := a.delete(opts.topic); err != nil {
			return nil, err
		}
		return map[string]string{"deleted": opts.topic}, nil
	}
	ok, notController, failed := 0, 0, map[string]int{}
	count := func(err error) {
		if err == nil {
			ok++
		} else {
			failed[err.Error()]++
			if a.notController(err) {
				notController++
			}
		}
		time.Sleep(opts.pause)
	}
	for i := 0; i < opts.count; i++ {
		topic := fmt.Sprintf("%s-%d", opts.prefix, i)
		count(a.create(topic, 1))
		count(a.delete(topic))
	}
	return map[string]interface{}{"ok": ok, "failed": failed, "not_controller": notController}, nil
}
