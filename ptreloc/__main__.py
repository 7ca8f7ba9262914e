from ptreloc.cli import main

main()
