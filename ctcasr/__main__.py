from ctcasr.cli import main

main()
