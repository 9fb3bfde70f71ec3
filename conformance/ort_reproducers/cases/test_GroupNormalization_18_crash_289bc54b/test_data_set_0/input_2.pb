
Bin2J^¿