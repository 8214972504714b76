from shelfgraph.cli import main

main()
