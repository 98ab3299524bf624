from fssbench.cli import main

main()
