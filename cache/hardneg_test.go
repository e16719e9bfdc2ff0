package cache

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// The hard negatives are pairs of prompts that share most words but ask something else.
// They are generated from the templates below and committed as testdata/hard_negatives.json;
// regenerate with: go test ./cache -run TestHardNegativesFile -write-hard-negatives
var writeHardNegatives = flag.Bool("write-hard-negatives", false, "rewrite testdata/hard_negatives.json")

type hardNegative struct {
	Kind string `json:"kind"`
	A    string `json:"a"`
	B    string `json:"b"`
}

const hardNegativesPath = "testdata/hard_negatives.json"

func generateHardNegatives() []hardNegative {
	var out []hardNegative
	add := func(kind, a, b string) { out = append(out, hardNegative{kind, a, b}) }

	// Swapped entity: countries, cities, people, companies.
	countries := [][2]string{{"France", "Spain"}, {"Germany", "Austria"}, {"Canada", "Australia"}, {"Brazil", "Argentina"},
		{"Japan", "South Korea"}, {"India", "Pakistan"}, {"Italy", "Greece"}, {"Norway", "Sweden"}, {"Egypt", "Morocco"},
		{"Mexico", "Peru"}, {"Kenya", "Nigeria"}, {"Poland", "Hungary"}}
	for i, p := range countries {
		switch i % 4 {
		case 0:
			add("entity", "What is the capital of "+p[0]+"?", "What is the capital of "+p[1]+"?")
		case 1:
			add("entity", "What is the population of "+p[0]+"?", "What is the population of "+p[1]+"?")
		case 2:
			add("entity", "What currency is used in "+p[0]+"?", "What currency is used in "+p[1]+"?")
		case 3:
			add("entity", "What is the official language of "+p[0]+"?", "What is the official language of "+p[1]+"?")
		}
		add("entity", "Do I need a visa to travel to "+p[0]+" for two weeks?", "Do I need a visa to travel to "+p[1]+" for two weeks?")
	}
	people := [][2]string{{"Albert Einstein", "Isaac Newton"}, {"Marie Curie", "Rosalind Franklin"}, {"Abraham Lincoln", "George Washington"},
		{"Leonardo da Vinci", "Michelangelo"}, {"William Shakespeare", "Charles Dickens"}, {"Nikola Tesla", "Thomas Edison"},
		{"Ada Lovelace", "Alan Turing"}, {"Napoleon Bonaparte", "Julius Caesar"}}
	for _, p := range people {
		add("entity", "When was "+p[0]+" born?", "When was "+p[1]+" born?")
		add("entity", "What is "+p[0]+" best known for?", "What is "+p[1]+" best known for?")
	}
	companies := [][2]string{{"Apple", "Microsoft"}, {"Amazon", "Walmart"}, {"Tesla", "Toyota"}, {"Netflix", "Disney"}, {"Google", "Meta"}}
	for _, p := range companies {
		add("entity", "Who is the current CEO of "+p[0]+"?", "Who is the current CEO of "+p[1]+"?")
		add("entity", "When was "+p[0]+" founded and by whom?", "When was "+p[1]+" founded and by whom?")
	}
	cities := [][2]string{{"Paris", "Lyon"}, {"New York", "Boston"}, {"Tokyo", "Osaka"}, {"London", "Manchester"}, {"Berlin", "Munich"}, {"Sydney", "Melbourne"}}
	for _, p := range cities {
		add("entity", "What are the best things to do in "+p[0]+" in winter?", "What are the best things to do in "+p[1]+" in winter?")
		add("entity", "How do I get from the airport to the center of "+p[0]+"?", "How do I get from the airport to the center of "+p[1]+"?")
	}

	// Swapped programming language or technology.
	langs := [][2]string{{"Python", "JavaScript"}, {"Java", "Kotlin"}, {"Go", "Rust"}, {"C++", "C#"}, {"Ruby", "PHP"},
		{"TypeScript", "Python"}, {"Swift", "Kotlin"}, {"Rust", "C++"}}
	tasks := []string{"How do I reverse a list in %s?", "How do I read a file line by line in %s?",
		"How do I sort a dictionary by value in %s?", "How do I parse JSON in %s?",
		"How do I make an HTTP GET request in %s?", "How do I convert a string to an integer in %s?",
		"What is the idiomatic way to handle errors in %s?", "How do I write a unit test in %s?"}
	for i, t := range tasks {
		for j := range 3 {
			p := langs[(i+j*3)%len(langs)]
			add("language", fmt.Sprintf(t, p[0]), fmt.Sprintf(t, p[1]))
		}
	}
	techs := [][2]string{{"PostgreSQL", "MySQL"}, {"React", "Vue"}, {"Docker", "Kubernetes"}, {"Django", "Flask"},
		{"Redis", "MongoDB"}, {"AWS", "Azure"}, {"Linux", "Windows"}, {"Angular", "Svelte"}}
	for _, p := range techs {
		add("technology", "How do I install "+p[0]+" on my laptop?", "How do I install "+p[1]+" on my laptop?")
		add("technology", "What are common performance problems with "+p[0]+"?", "What are common performance problems with "+p[1]+"?")
	}
	add("language", "Convert this Python script to Java", "Convert this Java script to Python")
	add("language", "Rewrite this JavaScript function in TypeScript", "Rewrite this TypeScript function in JavaScript")

	// Swapped number.
	nums := [][4]int{{12, 7, 12, 8}, {15, 4, 16, 4}, {123, 45, 123, 54}, {9, 9, 9, 8}, {250, 3, 25, 3}, {64, 2, 64, 3}}
	for _, n := range nums {
		add("number", fmt.Sprintf("What is %d times %d?", n[0], n[1]), fmt.Sprintf("What is %d times %d?", n[2], n[3]))
		add("number", fmt.Sprintf("What is %d divided by %d?", n[0], n[1]), fmt.Sprintf("What is %d divided by %d?", n[2], n[3]))
	}
	for _, n := range [][2]int{{144, 169}, {81, 18}, {2, 3}, {1000, 10000}} {
		add("number", fmt.Sprintf("What is the square root of %d?", n[0]), fmt.Sprintf("What is the square root of %d?", n[1]))
	}
	for _, n := range [][2]string{{"3", "5"}, {"100", "200"}, {"10", "20"}} {
		add("number", "Write a "+n[0]+"-sentence summary of the French Revolution", "Write a "+n[1]+"-sentence summary of the French Revolution")
		add("number", "Give me "+n[0]+" ideas for a birthday party", "Give me "+n[1]+" ideas for a birthday party")
	}
	add("number", "What is 15% of 80?", "What is 15% of 60?")
	add("number", "Is 97 a prime number?", "Is 91 a prime number?")
	add("number", "How many calories are in two eggs?", "How many calories are in three eggs?")
	add("number", "What was the score of the 2018 World Cup final?", "What was the score of the 2014 World Cup final?")
	add("number", "Explain the changes introduced in Python 3.12", "Explain the changes introduced in Python 3.11")
	add("number", "What is the difference between HTTP/1.1 and HTTP/2?", "What is the difference between HTTP/2 and HTTP/3?")
	add("number", "How do I upgrade from React 17 to React 18?", "How do I upgrade from React 16 to React 17?")
	add("number", "Calculate the compound interest on $5000 at 4% for 10 years", "Calculate the compound interest on $5000 at 6% for 10 years")

	// Negation.
	neg := [][2]string{
		{"Which foods are high in protein?", "Which foods are not high in protein?"},
		{"How do I cook rice with a rice cooker?", "How do I cook rice without a rice cooker?"},
		{"Can I run Docker containers with root privileges?", "Can I run Docker containers without root privileges?"},
		{"List the countries that use the euro", "List the countries that do not use the euro"},
		{"Why does my code compile?", "Why doesn't my code compile?"},
		{"Is it safe to eat raw cookie dough?", "Why is it not safe to eat raw cookie dough?"},
		{"Which animals can swim?", "Which animals cannot swim?"},
		{"How do I lose weight with exercise?", "How do I lose weight without exercise?"},
		{"What happens if I take ibuprofen with food?", "What happens if I take ibuprofen without food?"},
		{"Should I use a semicolon here?", "Should I not use a semicolon here?"},
		{"Which vitamins are fat soluble?", "Which vitamins are not fat soluble?"},
		{"Why is my Wi-Fi working on my phone?", "Why is my Wi-Fi not working on my phone?"},
		{"How can I sleep better with caffeine in the afternoon?", "How can I sleep better with no caffeine in the afternoon?"},
		{"Is the Great Wall of China visible from space?", "Is the Great Wall of China never visible from space?"},
		{"What should I do if the car starts?", "What should I do if the car won't start?"},
		{"Make a vegan lasagna recipe with cheese", "Make a vegan lasagna recipe without cheese"},
		{"Explain why the test passes", "Explain why the test does not pass"},
		{"How do I merge two branches with conflicts in git?", "How do I merge two branches without conflicts in git?"},
	}
	for _, p := range neg {
		add("negation", p[0], p[1])
	}

	// Natural language.
	phrases := []string{"good morning", "thank you very much", "where is the train station", "I love you", "how much does this cost"}
	tongues := [][2]string{{"French", "German"}, {"Spanish", "Italian"}, {"Japanese", "Chinese"}, {"Portuguese", "Spanish"}}
	for i, ph := range phrases {
		for j := range 2 {
			p := tongues[(i+j)%len(tongues)]
			add("natural-language", "Translate '"+ph+"' into "+p[0], "Translate '"+ph+"' into "+p[1])
		}
	}
	add("natural-language", "Translate this paragraph from English to French", "Translate this paragraph from French to English")
	add("natural-language", "What are good resources for learning Korean?", "What are good resources for learning Japanese?")

	// Units and direction.
	units := [][2]string{{"miles", "kilometers"}, {"pounds", "kilograms"}, {"Celsius", "Fahrenheit"}, {"inches", "centimeters"},
		{"gallons", "liters"}, {"feet", "meters"}}
	for _, u := range units {
		add("unit", "Convert 10 "+u[0]+" to "+u[1], "Convert 10 "+u[1]+" to "+u[0])
		add("unit", "How do I convert "+u[0]+" to "+u[1]+" in my head?", "How do I convert "+u[1]+" to "+u[0]+" in my head?")
	}
	add("unit", "How many grams are in a pound?", "How many ounces are in a pound?")
	add("unit", "How many seconds are in a day?", "How many minutes are in a day?")
	add("unit", "How many megabytes are in a gigabyte?", "How many kilobytes are in a gigabyte?")
	add("unit", "How many cups are in a liter?", "How many cups are in a gallon?")
	add("unit", "What is the speed of light in miles per second?", "What is the speed of light in kilometers per second?")
	add("unit", "How long does it take to boil an egg for 5 minutes?", "How long does it take to boil an egg for 5 seconds?")

	// Dates.
	add("date", "What happened on July 4, 1776?", "What happened on July 14, 1789?")
	add("date", "What day of the week was January 1, 2000?", "What day of the week was January 1, 2001?")
	add("date", "What holidays are in December?", "What holidays are in November?")
	add("date", "What is the weather usually like in Rome in August?", "What is the weather usually like in Rome in February?")
	add("date", "Which team won the Super Bowl in 2020?", "Which team won the Super Bowl in 2021?")
	add("date", "Who won the Nobel Prize in Physics in 1921?", "Who won the Nobel Prize in Physics in 1922?")
	add("date", "Is the stock market open on Monday?", "Is the stock market open on Saturday?")
	add("date", "What were the major events of 1969?", "What were the major events of 1968?")
	add("date", "When does daylight saving time start in March?", "When does daylight saving time end in November?")
	add("date", "Plan a 3-day trip to Iceland in June", "Plan a 3-day trip to Iceland in January")

	// Polarity: the same words around a flipped question.
	pol := [][2]string{
		{"What is the largest planet in the solar system?", "What is the smallest planet in the solar system?"},
		{"What are the advantages of remote work?", "What are the disadvantages of remote work?"},
		{"How do I sort an array in ascending order in JavaScript?", "How do I sort an array in descending order in JavaScript?"},
		{"How do I encrypt a file with OpenSSL?", "How do I decrypt a file with OpenSSL?"},
		{"How do I compress a folder on a Mac?", "How do I decompress a folder on a Mac?"},
		{"What is the highest mountain in Europe?", "What is the lowest point in Europe?"},
		{"How can I increase my credit score quickly?", "What can decrease my credit score quickly?"},
		{"What should I eat before a workout?", "What should I eat after a workout?"},
		{"How do I upload a file to Google Drive?", "How do I download a file from Google Drive?"},
		{"How do I add a column to a table in SQL?", "How do I remove a column from a table in SQL?"},
		{"Which is the longest river in Africa?", "Which is the shortest river in Africa?"},
		{"How do I enable two-factor authentication on Gmail?", "How do I disable two-factor authentication on Gmail?"},
		{"What are the best practices for password storage?", "What are the worst practices for password storage?"},
		{"How do I import a CSV file into Excel?", "How do I export a CSV file from Excel?"},
		{"What is the first step to start a business?", "What is the last step to start a business?"},
		{"When is the best time to buy a used car?", "When is the best time to sell a used car?"},
		{"What is the maximum value of a 32-bit integer?", "What is the minimum value of a 32-bit integer?"},
		{"How do I serialize an object to JSON in C#?", "How do I deserialize an object from JSON in C#?"},
		{"What are the benefits of intermittent fasting?", "What are the risks of intermittent fasting?"},
		{"Which country has the most time zones?", "Which country has the fewest time zones?"},
	}
	for _, p := range pol {
		add("polarity", p[0], p[1])
	}
	return out
}

func encodeHardNegatives(list []hardNegative) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(list); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func loadHardNegatives(t testing.TB) []hardNegative {
	t.Helper()
	raw, err := os.ReadFile(hardNegativesPath)
	if err != nil {
		t.Fatalf("read %s: %v", hardNegativesPath, err)
	}
	var list []hardNegative
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatalf("decode %s: %v", hardNegativesPath, err)
	}
	return list
}

// TestHardNegativesFile keeps the committed file in step with the generator and checks the
// set is what the evaluation needs: at least 200 distinct pairs of different prompts.
func TestHardNegativesFile(t *testing.T) {
	want := encodeHardNegatives(generateHardNegatives())
	if *writeHardNegatives {
		if err := os.MkdirAll(filepath.Dir(hardNegativesPath), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(hardNegativesPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(hardNegativesPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the generator; run with -write-hard-negatives", hardNegativesPath)
	}
	list := loadHardNegatives(t)
	if len(list) < 200 {
		t.Fatalf("%d hard negatives, want at least 200", len(list))
	}
	seen := map[[2]string]bool{}
	for _, p := range list {
		if p.A == p.B || p.A == "" || p.B == "" || p.Kind == "" {
			t.Errorf("bad pair %+v", p)
		}
		if seen[[2]string{p.A, p.B}] {
			t.Errorf("duplicate pair %+v", p)
		}
		seen[[2]string{p.A, p.B}] = true
	}
}
